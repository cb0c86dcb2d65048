#!/usr/bin/env bash
# A runtime that reports an init error and then keeps running instead of exiting: lrp must
# kill it. It writes its pid to $PID_FILE first, so a test can watch for it.
set -u
echo $$ > "$PID_FILE"
curl -s -o /dev/null -H 'Expect:' -H 'Lambda-Runtime-Function-Error-Type: Runtime.Lingering' \
  -X POST --data-binary '{"errorMessage":"cannot start, will not exit","errorType":"Runtime.Lingering"}' \
  "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/init/error"
exec sleep 300
