#!/bin/sh
# A custom-runtime bootstrap written the way AWS's tutorial writes one: poll the
# Runtime API for the next event, answer it, repeat. A Rust pmcp server built with
# `cargo lambda build --release --arm64` replaces this file with a real executable.
set -eu

while true; do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  TABLES=$(ls "${LAMBDA_TASK_ROOT}" | tr '\n' ' ')
  RESPONSE="{\"statusCode\":200,\"headers\":{\"content-type\":\"application/json\"},\"body\":\"{\\\"files\\\":\\\"${TABLES}\\\",\\\"bytes\\\":${#EVENT_DATA}}\"}"
  curl -sS -X POST "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/${REQUEST_ID}/response" -d "$RESPONSE" > /dev/null
  rm -f "$HEADERS"
done
