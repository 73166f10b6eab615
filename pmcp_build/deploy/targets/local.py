"""A local target: the package and a state file under .pmcp/deployments/<target>/,
for `pmcp-build serve`. No cloud; the same plan and executor as the others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pmcp_build.deploy.actions import Action, Call, Change, TargetPlan, noop, unread
from pmcp_build.deploy.targets.common import TargetInput
from pmcp_build.manifest.model import LocalTarget


def deployment_dir(root: Path, target: str) -> Path:
    return root / ".pmcp" / "deployments" / target


def read(given: TargetInput[LocalTarget]) -> dict[str, Any]:
    state = deployment_dir(given.root, given.name) / "state.json"
    try:
        return {"sha256": json.loads(state.read_text()).get("sha256")}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {"sha256": None}  # absent or unreadable state: deploy again


def diff(*, path: str, sha256: str, state: dict[str, Any], record: dict[str, Any]) -> list[Action]:
    before = state.get("sha256")
    if before == sha256:
        return [noop(path, "same sha256")]
    write = Call(
        "local",
        "write_package",
        {"Directory": path, "Package": {"$package": "path"}, "State": record},
    )
    return [
        Action(
            "local.write_package",
            "~" if before else "+",
            path,
            "package changed" if before else "not deployed yet",
            (Change("sha256", before, sha256),),
            (write,),
        )
    ]


def plan(given: TargetInput[LocalTarget], refresh: bool) -> TargetPlan:
    pkg = given.package
    assert pkg is not None
    path = deployment_dir(given.root, given.name)
    state = read(given) if refresh else {}
    record = {
        "sha256": pkg.sha256,
        "server": given.server,
        "runtime": pkg.runtime,
        "handler": pkg.handler,
        "architecture": pkg.architecture,
    }
    actions = diff(path=str(path), sha256=pkg.sha256, state=state, record=record)
    if not refresh:
        actions = unread(actions)
    return TargetPlan(
        name=given.name,
        kind="local",
        actions=tuple(actions),
        observed=state,
        outputs={"path": str(path)},
        refreshed=refresh,
    )


def destroy(given: TargetInput[LocalTarget]) -> TargetPlan:
    path = deployment_dir(given.root, given.name)
    actions = []
    if path.exists():
        actions.append(
            Action(
                "local.remove",
                "-",
                str(path),
                "destroy",
                calls=(Call("local", "remove", {"Directory": str(path)}),),
            )
        )
    return TargetPlan(name=given.name, kind="local", actions=tuple(actions))


# -- the executor's helpers for service "local" -------------------------------------------


def write_package(client: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
    dest = Path(params["Directory"])
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".package.zip.tmp"
    shutil.copyfile(params["Package"], tmp)
    tmp.replace(dest / "package.zip")
    (dest / "state.json").write_text(json.dumps(params["State"], indent=2) + "\n")
    return {}


def remove(client: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
    shutil.rmtree(params["Directory"], ignore_errors=True)
    return {}


HELPERS = {("local", "write_package"): write_package, ("local", "remove"): remove}
