"""A Lambda function for the awslambdaric runtime (PyPI), for end-to-end tests. What it does
depends on the event's rawPath, like tests/peers/rust_function.rs."""

import json
import os
import time


def handler(event, context):
    path = event.get("rawPath", "/")
    if path == "/respond":
        return json.loads(event["body"])
    if path == "/error":
        raise ValueError("boom from python")
    if path == "/error/large":
        # awslambdaric sends the error's X-Ray cause, message included, in a header of up to
        # 1 MiB (lambda_runtime_client.py, post_invocation_error).
        raise ValueError("large " + "x" * 600_000)
    if path == "/exit":
        os._exit(3)
    if path == "/log":
        print("a line from the function", flush=True)
    if path.startswith("/sleep/"):
        time.sleep(int(path.split("/")[2]) / 1000)
    if path.startswith("/barrier/"):
        # Marks its arrival, then waits (up to 10 s) for the others: succeeds only when
        # int(n) invocations run at once.
        count, folder = int(path.split("/")[2]), event["queryStringParameters"]["dir"]
        open(os.path.join(folder, context.aws_request_id), "w").close()
        for _ in range(1000):
            if len(os.listdir(folder)) >= count:
                return {"statusCode": 200, "body": "all arrived"}
            time.sleep(0.01)
        raise TimeoutError("the other invocations never arrived")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-function": "python"},
        "body": json.dumps(
            {
                "event": event,
                "pid": os.getpid(),
                "request_id": context.aws_request_id,
                "function_name": context.function_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "TZ", "GREETING"))},
            }
        ),
    }


def broken_init_handler(event, context):
    return {}


def echo_event(event, context):
    """Returns the event itself, in a result every front door accepts."""
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(event),
    }
