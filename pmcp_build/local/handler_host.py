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
import time
import traceback
from typing import Any


class LambdaContext:
    """What Lambda's python runtime passes as `context`, from the runner's envelope."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.function_name = info.get("function_name", "local")
        self.function_version = "$LATEST"
        self.invoked_function_arn = info.get("invoked_function_arn", "")
        self.memory_limit_in_mb = int(info.get("memory_limit_in_mb", 512))
        self.aws_request_id = info.get("aws_request_id", "")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = info.get("log_stream_name", "local")
        self.identity = None
        self.client_context = None
        self._deadline_ms = int(info.get("deadline_ms", 0))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def main() -> None:
    task_root, module_name = sys.argv[1], sys.argv[2]
    # User code sees what Lambda's python runtime gives it: its own argv (argparse in a
    # server module must not see ours) and no stdin (a stdio loop at import ends).
    sys.argv = ["/var/runtime/bootstrap.py"]
    events = os.fdopen(os.dup(0), "r")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the server prints lands on stderr, as in CloudWatch
    sys.stdout = sys.stderr
    sys.path.insert(0, task_root)
    os.chdir(task_root)
    os.environ.setdefault("LAMBDA_TASK_ROOT", task_root)
    opened = _watch_opens()
    try:
        module = importlib.import_module(module_name)
        handler = module.handler
    except BaseException:
        protocol.write(json.dumps({"init_error": traceback.format_exc()}) + "\n")
        return
    protocol.write(json.dumps({"ready": True, "server": _describe(module)}) + "\n")
    for line in events:
        if not line.strip():
            continue
        try:
            envelope = json.loads(line)
            if envelope.get("loaded_files"):
                reply = {"loaded_files": _loaded_files(), "opened": sorted(opened)}
                protocol.write(json.dumps(reply) + "\n")
                continue
            context = LambdaContext(envelope.get("context") or {})
            result = {"result": handler(envelope.get("event"), context)}
        except BaseException:
            result = {"error": traceback.format_exc()}
        protocol.write(json.dumps(result, default=str) + "\n")


# Audit events that name a file whose bytes the process reads or runs: the first
# argument (the second for subprocess.Popen, its args) is the path.
_READS = {"open": 0, "os.exec": 0, "os.posix_spawn": 0, "os.spawn": 1, "sqlite3.connect": 0,
          "ctypes.dlopen": 0, "shutil.copyfile": 0, "subprocess.Popen": 0}  # fmt: skip
_OPENED_LIMIT = 20_000  # paths kept; past it, "*": it may have opened anything


def _watch_opens() -> set[str]:
    """Every file the server opens (reads, runs, connects to) from here on, as absolute
    paths: the load check skips a rebuild whose only changes are files it never opened
    (package/load_check.py). An audit hook, added before the handler is imported."""
    opened: set[str] = set()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        at = _READS.get(event)
        if at is None or len(args) <= at:
            return
        try:  # never in the server's way: a hook that raises fails the operation
            path = args[at]
            if event == "subprocess.Popen" and path is None and args[1:2]:
                argv = args[1]
                path = argv if isinstance(argv, (str, bytes)) else (list(argv) or [None])[0]
            if len(opened) < _OPENED_LIMIT:
                opened.add(os.path.normpath(os.path.join(os.getcwd(), os.fsdecode(path))))
            else:  # a long-running server (serve) holds no more than this
                opened.add("*")
        except Exception:  # a file descriptor, None, a removed cwd
            pass

    sys.addaudithook(hook)
    return opened


def _loaded_files() -> list[str]:
    """The source files of the modules imported so far (the task root's and the standard
    library's): the load check compiles their bytecode itself, outside the sandbox, for
    the next check to reuse."""
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.startswith("/") and path.endswith(".py"):
            found.append(path)
    return found


def _describe(module: object) -> object:
    """What the package loaded (kind, name, load error), for the build's load check."""
    kinds = sys.modules.get("__metorial__.server_kinds")
    runtime = getattr(module, "_runtime", None)
    if kinds is None or runtime is None:
        return None
    return kinds.describe(getattr(runtime, "found", None), getattr(runtime, "load_error", None))


if __name__ == "__main__":
    main()
