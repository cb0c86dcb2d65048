"""A small HTTP function for AWS's Python base image: it says hello and echoes the request."""

import json
import os


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "greeting": os.environ.get("GREETING", "hello"),
                "method": event["requestContext"]["http"]["method"],
                "path": event["rawPath"],
                "query": event.get("queryStringParameters") or {},
            }
        ),
    }
