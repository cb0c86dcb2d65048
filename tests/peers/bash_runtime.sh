#!/usr/bin/env bash
# A custom Lambda runtime in bash + curl for end-to-end tests. What it does depends on the
# event's rawPath; it prints what the Runtime API answered, so tests can read it in lrp's log.
set -uo pipefail
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT

post() { # post PATH BODY [HEADER] → prints the HTTP status
  curl -s -o /dev/null -w '%{http_code}' -H 'Expect:' ${3:+-H "$3"} -X POST --data-binary @- "$api/$1" <<< "$2"
}

while true; do
  event=$(curl -sS --fail -D "$headers" "$api/invocation/next") || exit 1
  id=$(tr -d '\r' < "$headers" | awk -F': ' 'tolower($1) == "lambda-runtime-aws-request-id" { print $2 }')
  deadline=$(tr -d '\r' < "$headers" | awk -F': ' 'tolower($1) == "lambda-runtime-deadline-ms" { print $2 }')
  path=$(printf '%s' "$event" | grep -o '"rawPath":"[^"]*"' | head -n 1 | cut -d'"' -f4)
  case "$path" in
    /error)
      post "invocation/$id/error" '{"errorMessage":"boom from bash","errorType":"BashError"}' \
        'Lambda-Runtime-Function-Error-Type: Unhandled' > /dev/null ;;
    /exit) exit 3 ;;
    /sleep/*) sleep "$(( ${path#/sleep/} / 1000 )).$(printf '%03d' $(( ${path#/sleep/} % 1000 )))"
      post "invocation/$id/response" '{"statusCode":200,"body":"slept"}' > /dev/null ;;
    /orphan)
      # A grandchild in the runtime's process group, then a hang past any timeout.
      bash -c 'exec -a lrp-test-orphan-marker sleep 300' &
      sleep 300 ;;
    /misuse)
      echo "wrong-id-status=$(post "invocation/not-$id/response" '{}')"
      echo "first-status=$(post "invocation/$id/response" '{"statusCode":200,"body":"first"}')"
      echo "second-status=$(post "invocation/$id/response" '{"statusCode":200,"body":"second"}')" ;;
    /open-files)
      post "invocation/$id/response" "{\"statusCode\":200,\"body\":\"open-files=$(ulimit -Sn)\"}" > /dev/null ;;
    /sched-policy) # field 41 of /proc/PID/stat: the scheduling policy (sched(7) numbers)
      post "invocation/$id/response" "{\"statusCode\":200,\"body\":\"policy=$(awk '{ print $41 }' "/proc/$$/stat")\"}" > /dev/null ;;
    /big)
      big=$(head -c 7000000 /dev/zero | tr '\0' 'x')
      echo "big-status=$(post "invocation/$id/response" "{\"statusCode\":200,\"body\":\"$big\"}")" ;;
    *)
      post "invocation/$id/response" \
        "{\"statusCode\":200,\"body\":\"bash pid=$$ deadline=$deadline\"}" > /dev/null ;;
  esac
done
