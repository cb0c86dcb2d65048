"""A custom runtime that streams one chunk and then reports an error in the HTTP trailers
Lambda-Runtime-Function-Error-Type and -Body, as Node's aws-lambda-ric does for an error
mid-stream. Standard library only: the request is written by hand, since http.client cannot
send trailers. Serves invocations until it is stopped."""

import base64
import json
import os
import socket
import urllib.request

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
host, port = api.split(":")

while True:
    with urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next") as next_:
        request_id = next_.headers["Lambda-Runtime-Aws-Request-Id"]
        next_.read()
    error = json.dumps({"errorType": "Custom.Failure", "errorMessage": "failed mid-stream"})
    prelude = json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"}})
    body = prelude.encode() + b"\0" * 8 + b"partial\n"
    request = (
        f"POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n"
        f"Host: {api}\r\n"
        "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
        "Content-Type: application/vnd.awslambda.http-integration-response\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
        "\r\n"
    ).encode()
    request += f"{len(body):x}\r\n".encode() + body + b"\r\n"
    request += (
        "0\r\n"
        "Lambda-Runtime-Function-Error-Type: Custom.Failure\r\n"
        f"Lambda-Runtime-Function-Error-Body: {base64.b64encode(error.encode()).decode()}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(request)
        connection.recv(4096)
