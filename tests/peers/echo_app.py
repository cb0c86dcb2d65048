"""A plain web app (Python standard library) for the Lambda Web Adapter tests: it answers
every request with what it received, as JSON, and sets two cookies. GET /gated?dir=D writes
slowly instead: "first", then (once the file D/go exists, at most 10 s later) "second". It
listens on 127.0.0.1:$PORT."""

import base64
import json
import os
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def gated(self, url):
        folder = dict(urllib.parse.parse_qsl(url.query))["dir"]
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(b"first\n")
        self.wfile.flush()
        for _ in range(1000):
            if os.path.exists(os.path.join(folder, "go")):
                self.wfile.write(b"second\n")
                return
            time.sleep(0.01)
        self.wfile.write(b"never released\n")

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/gated":
            return self.gated(url)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        echo = {
            "method": self.command,
            "path": url.path,
            "query": urllib.parse.parse_qsl(url.query, keep_blank_values=True),
            "headers": headers,
            "body": base64.b64encode(body).decode(),
        }
        data = json.dumps(echo).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("set-cookie", "a=1; Path=/")
        self.send_header("set-cookie", "b=2; Path=/")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Echo).serve_forever()
