#!/usr/bin/env bash
# The Lambda Web Adapter as a function's bootstrap, as in a Lambda zip package: start the web
# app, then hand the process to the adapter, which waits until the app answers on $PORT and
# then serves invocations from the Runtime API by forwarding them to the app.
set -eu
"$PYTHON" "$(dirname "$0")/echo_app.py" &
exec "$LAMBDA_ADAPTER"
