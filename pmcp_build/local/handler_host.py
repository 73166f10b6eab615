"""Run a python package's handler as Lambda would: `python -I -S handler_host.py TASK_ROOT MODULE`.

Standard library only, and started isolated (-I: no script dir, no user site; -S: no
site-packages), so the handler sees the package and the standard library, nothing
else from the build machine. Events arrive as JSON lines on stdin; results leave as
JSON lines on the original stdout, while the handler's own prints go to stderr.
"""

import importlib
import json
import os
import sys
import traceback


def main() -> None:
    task_root, module_name = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the server prints lands on stderr, as in CloudWatch
    sys.stdout = sys.stderr
    sys.path.insert(0, task_root)
    os.chdir(task_root)
    os.environ.setdefault("LAMBDA_TASK_ROOT", task_root)
    try:
        handler = importlib.import_module(module_name).handler
    except BaseException:
        protocol.write(json.dumps({"init_error": traceback.format_exc()}) + "\n")
        return
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = {"result": handler(json.loads(line), None)}
        except BaseException:
            result = {"error": traceback.format_exc()}
        protocol.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
