"""Load the built server at build time, in the isolated worker `serve` uses.

A server that does not load is found by `build` and `plan`, not by the first
request after a deploy. The check runs the package's own handler (a fresh
interpreter on the task root, as Lambda imports it) and asks it to `discover`; it
is skipped with a note when this machine cannot run the package (another
architecture, no python3.X here). A package that loaded once is not loaded again:
the result is cached by the package's sha256. PMCP_BUILD_LOAD_CHECK=0 skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from pmcp_build.errors import UserError
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.write import Package

FORMAT = "load-v1"
TRACEBACK_LINES = 8


@dataclass(frozen=True)
class LoadReport:
    status: str  # "ok" | "skipped"
    kind: str = ""
    name: str = ""
    tools: int = 0
    resources: int = 0
    prompts: int = 0
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        if self.status == "skipped":
            return f"server: not loaded here ({'; '.join(self.notes)})"
        counts = ", ".join(
            _plural(n, word)
            for n, word in (
                (self.tools, "tool"),
                (self.resources, "resource"),
                (self.prompts, "prompt"),
            )
        )
        return f"server: {self.kind} {self.name!r}: {counts}"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "kind": self.kind,
            "name": self.name,
            "tools": self.tools,
            "resources": self.resources,
            "prompts": self.prompts,
            "notes": list(self.notes),
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def last_lines(text: str, count: int = TRACEBACK_LINES) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-count:])


def check(package: Package) -> LoadReport | None:
    """None for a binary package (nothing to load); raises UserError when it fails."""
    layout = package.layout
    if layout.handler == "bootstrap":
        return None
    if os.environ.get("PMCP_BUILD_LOAD_CHECK", "1") == "0":
        return LoadReport("skipped", notes=("PMCP_BUILD_LOAD_CHECK=0",))
    cached = cache_dir() / "loadcheck" / f"{package.sha256}.json"
    if cached.exists():
        data = json.loads(cached.read_text())
        if data.get("format") == FORMAT:
            return LoadReport(**{**data["report"], "notes": tuple(data["report"]["notes"])})
    # Imported only now: a cached or skipped check keeps the rebuild fast path light.
    from pmcp_build.layout.python import find_python
    from pmcp_build.local.runner import host_architecture, open_invoker

    if layout.architecture != host_architecture():
        return LoadReport(
            "skipped",
            notes=(f"built for {layout.architecture}, this machine is {host_architecture()}",),
        )
    version = layout.runtime.removeprefix("python")
    if find_python(version) is None:
        return LoadReport("skipped", notes=(f"no python{version} on this machine",))
    # The task root comes from the layout the zip was written from (entries are the zip's
    # files, byte for byte), not by inflating the zip again: the check's largest cost.
    invoker = open_invoker(package.path, layout, log=subprocess.DEVNULL, from_layout=True)
    try:
        info: dict[str, Any] = getattr(invoker, "server_info", None) or {}
        if info.get("load_error"):
            raise UserError(
                f"{package.path.name}: the server failed to load:\n{last_lines(info['load_error'])}"
            )
        reply = invoker.invoke({"action": "discover"}, timeout=60)
    finally:
        invoker.close()
    if not isinstance(reply, dict) or not reply.get("success"):
        error = (reply or {}).get("error") if isinstance(reply, dict) else reply
        message = error.get("message", error) if isinstance(error, dict) else error
        raise UserError(
            f"{package.path.name}: the server loaded but discover failed:\n"
            f"{last_lines(str(message))}"
        )
    discovery = reply["discovery"]
    report = LoadReport(
        "ok",
        kind=str(info.get("label") or info.get("kind") or "server"),
        name=str(discovery.get("implementation", {}).get("name", "")),
        tools=len(discovery.get("tools") or []),
        resources=len(discovery.get("resources") or [])
        + len(discovery.get("resourceTemplates") or []),
        prompts=len(discovery.get("prompts") or []),
        notes=tuple(info.get("notes") or ()),
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": FORMAT, "report": report.to_json()}))
    os.replace(tmp, cached)
    return report
