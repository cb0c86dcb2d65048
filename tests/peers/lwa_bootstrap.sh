#!/usr/bin/env bash
# The Lambda Web Adapter as a function's bootstrap, as in a Lambda zip package: start the web
# app, then hand the process to the adapter, which waits until the app answers on $PORT and
# then serves invocations from the Runtime API by forwarding them to the app.
# The app is killed with this shell's process, which becomes the adapter: lrp ties only its
# own child to itself (PR_SET_PDEATHSIG), and a test ends lrp with SIGKILL.
set -eu
command -v setpriv > /dev/null ||
  { echo "lwa_bootstrap.sh: setpriv (util-linux) is missing" >&2; exit 127; }
setpriv --pdeathsig KILL "$PYTHON" "$(dirname "$0")/echo_app.py" &
exec "$LAMBDA_ADAPTER"
