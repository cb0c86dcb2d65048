"""A Lambda function in plain Python: a handler and the Runtime API loop that calls it,
standard library only. lrp starts it with AWS_LAMBDA_RUNTIME_API set, as Lambda does."""

import json
import os
import traceback
import urllib.request

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    name = query.get("name", "world")
    body = {
        "message": f"Hello, {name}!",
        "method": event["requestContext"]["http"]["method"],
        "path": event["rawPath"],
        "function": context["function_name"],
        "request_id": context["aws_request_id"],
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "cookies": [f"visited={name}; Path=/"],
        "body": json.dumps(body),
    }


def post(path, payload):
    request = urllib.request.Request(f"{API}/{path}", data=payload, method="POST")
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request).close()


def main():
    while True:
        with urllib.request.urlopen(f"{API}/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.load(response)
        context = {
            "aws_request_id": request_id,
            "function_name": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        }
        try:
            result = json.dumps(handler(event, context)).encode()
            post(f"invocation/{request_id}/response", result)
        except Exception as error:
            report = {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "stackTrace": traceback.format_exc().splitlines(),
            }
            post(f"invocation/{request_id}/error", json.dumps(report).encode())


if __name__ == "__main__":
    main()
