"""A Lambda function that streams server-sent events, in plain Python: the Runtime API loop
and the streamed response written by hand, standard library only. lrp starts it with
AWS_LAMBDA_RUNTIME_API set, as Lambda does.

The response goes back in the Runtime API's streaming mode: a chunked POST with
`Lambda-Runtime-Function-Response-Mode: streaming` and the content type
`application/vnd.awslambda.http-integration-response`, whose body is a JSON prelude (status,
headers, cookies), eight NUL bytes, then the events, each sent as it is ready.
`?count=N&interval=MS` sets how many events, and how far apart (default 5, 500 ms)."""

import http.client
import json
import os
import time
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def events(event):
    query = event.get("queryStringParameters") or {}
    count = int(query.get("count", "5"))
    interval = int(query.get("interval", "500")) / 1000
    for n in range(1, count + 1):
        if n > 1:
            time.sleep(interval)
        yield f"id: {n}\ndata: event {n} of {count}\n\n".encode()


def stream(request_id, event):
    connection = http.client.HTTPConnection(API)
    connection.putrequest("POST", f"/2018-06-01/runtime/invocation/{request_id}/response")
    connection.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    connection.putheader("Content-Type", "application/vnd.awslambda.http-integration-response")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()

    def send(chunk):
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    prelude = {"statusCode": 200, "headers": {"content-type": "text/event-stream"}}
    send(json.dumps(prelude).encode() + b"\0" * 8)
    for chunk in events(event):
        send(chunk)
    connection.send(b"0\r\n\r\n")
    connection.getresponse().read()
    connection.close()


def main():
    while True:
        with urllib.request.urlopen(f"http://{API}/2018-06-01/runtime/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.load(response)
        stream(request_id, event)


if __name__ == "__main__":
    main()
