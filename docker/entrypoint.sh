#!/bin/sh
# The build image's job, also runnable without Docker: needs ZIP_URL, S3_BUCKET and
# S3_KEY (optional: ZIP_SHA256, PYTHON_VERSION, ARCHITECTURE, AWS_* as usual).
# Prints a JSON summary (sha256, size, S3 location) as its last line; exits non-zero
# with one line on stderr when a variable is missing or a step fails.
set -eu
exec pmcp-build image-run "$@"
