"""The sandbox the build-time load check runs the source's code in: bubblewrap.

The code a build loads is the source's own (a pull request's `server.py`, a
`--source-url` zip), so it runs where Lambda would run it and nowhere else:

- environment: what Lambda gives a function (lambda_environment), never this machine's;
- network: a private namespace, loopback only;
- files: the task root at /var/task, the python it runs and its bytecode read-only, the
  system's /usr (and /lib.. links), a private /tmp, a minimal /dev, /proc of its own pid
  namespace; no home, no source folder, no cache, no other process;
- user: uid/gid 1000 in its own user namespace (not root), no new user namespaces;
- processes: a pid namespace whose init dies with us (--die-with-parent), so killing
  bwrap kills every process the code started, double forks included.

bwrap is the unprivileged sandbox Flatpak uses (Debian `bubblewrap`). A system `bwrap`
on PATH is used, or the binary PMCP_BUILD_BWRAP names. Whether it works here (user
namespaces may be disabled in a container) is found once per process by running it.
PMCP_BUILD_SANDBOX=0 acts as if there were none (to test that policy).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
BYTECODE_DIR = "/var/bytecode"  # -X pycache_prefix inside: the tool's bytecode, read-only
SANDBOX_UID = "1000"
# Lambda's PATH for python runtimes (no /var/lang here: the python is bound where it is).
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
# Top-level system folders a python needs to start (its libc, ld.so); symlinks on a
# merged-/usr system, kept as symlinks.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
NAMESPACES = (
    "--unshare-user", "--uid", SANDBOX_UID, "--gid", SANDBOX_UID,
    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--die-with-parent", "--new-session", "--clearenv",
)  # fmt: skip


def bwrap_binary() -> str | None:
    named = os.environ.get("PMCP_BUILD_BWRAP")
    if named:
        return named
    return shutil.which("bwrap")


@functools.cache
def _probe(bwrap: str) -> str | None:
    """None when `bwrap` runs a process with every namespace we ask for; else why not."""
    try:
        probe = subprocess.run(
            [bwrap, *NAMESPACES, "--disable-userns", *_system_mounts(), "--", "true"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not run ({exc})"
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return f"{bwrap} cannot sandbox here ({why[:200]})"
    return None


def unavailable() -> str | None:
    """Why no sandbox can be had on this machine, or None when bwrap works."""
    if os.environ.get("PMCP_BUILD_SANDBOX", "1") == "0":
        return "PMCP_BUILD_SANDBOX=0"
    bwrap = bwrap_binary()
    if bwrap is None:
        return "no bwrap here (install bubblewrap: `apt-get install bubblewrap`)"
    return _probe(bwrap)


def _system_mounts() -> list[str]:
    args: list[str] = []
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    for name in SYSTEM_FILES:
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return [*args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def python_prefix(python: str) -> Path:
    """The installation a python runs from (bin/python3.X's grandparent), symlinks and
    a virtualenv's link resolved: what the sandbox must show for it to start."""
    return Path(os.path.realpath(python)).parent.parent


def wrap(
    argv: list[str],
    env: dict[str, str],
    read_only: list[tuple[Path | str, str]],
    cwd: str = TASK_ROOT,
) -> list[str]:
    """The command line that runs `argv` in the sandbox with exactly `env` and the host
    paths `read_only` (host path, path inside) mounted read-only over the system's."""
    bwrap = bwrap_binary()
    assert bwrap is not None, "wrap() only after unavailable() said None"
    args = [bwrap, *NAMESPACES, "--disable-userns", *_system_mounts()]
    for host, inside in read_only:
        args += ["--ro-bind", str(host), inside]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return [*args, "--chdir", cwd, "--", *argv]


def lambda_environment(
    runtime: str,
    handler: str,
    function: str = "local",
    memory: int = 512,
    region: str = "us-east-1",
    task_root: str = TASK_ROOT,
) -> dict[str, str]:
    """The variables Lambda sets for every function (its reserved and default ones),
    minus credentials: nothing from this machine."""
    return {
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LAMBDA_TASK_ROOT": task_root,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        "_HANDLER": handler,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": LAMBDA_PATH,
    }
