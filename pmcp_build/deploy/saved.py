"""Sealed plan files: `plan --out F` writes one, `apply F` runs exactly its actions or
refuses with one line saying what changed.

A saved plan holds the plan (actions with their exact calls, secrets by reference),
what it was made from (the manifest's path and sha256, the package sha256), every
remote value it diffed, and a digest over the canonical JSON of all of that, so an
edit to any part is caught. Secret values are never written: a target's resolved
environment and the function's current environment are kept only as scrypt digests
with a random per-plan salt (slow and salted: holding the file does not let anyone
confirm a guessed secret cheaply).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from pmcp_build import __version__
from pmcp_build.deploy.actions import FORMAT_VERSION, Plan
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import Environment

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def secret_digest(values: dict[str, str], salt: bytes) -> str:
    return hashlib.scrypt(canonical(values), salt=salt, **_SCRYPT).hex()


def _sealed_secrets(plan: Plan, envs: dict[str, Environment], salt: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in plan.targets:
        entry = {"environment": secret_digest(envs[target.name].values, salt)}
        remote = target.private.get("remote_environment")
        if remote is not None:
            entry["remote_environment"] = secret_digest(remote, salt)
        out[target.name] = entry
    return out


def save(
    plan: Plan, envs: dict[str, Environment], manifest: Path, manifest_text: str, path: Path
) -> None:
    if not plan.refreshed:
        raise UserError(
            f"--out {path}: a plan made with --refresh=false cannot be applied, so it "
            "is not saved; plan with remote state"
        )
    salt = secrets.token_bytes(16)
    body = {
        "format_version": FORMAT_VERSION,
        "pmcp_build": __version__,
        "plan": plan.to_json(),
        "inputs": {
            "manifest": {
                "path": str(manifest.resolve()),
                "sha256": hashlib.sha256(manifest_text.encode()).hexdigest(),
            },
            "package_sha256": plan.package.get("sha256"),
            "salt": salt.hex(),
            "secrets": _sealed_secrets(plan, envs, salt),
        },
    }
    body["digest"] = hashlib.sha256(canonical(body)).hexdigest()
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, Any]:
    """The saved plan's content, once its digest checks out."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a saved plan ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a saved plan (not a JSON object)")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: plan format {data.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; run plan again with this version"
        )
    digest = data.pop("digest", None)
    if not isinstance(digest, str) or not hmac.compare_digest(
        digest, hashlib.sha256(canonical(data)).hexdigest()
    ):
        raise UserError(
            f"{path}: the plan file was edited after it was made (its digest does not "
            "match its content); run plan again"
        )
    try:
        Plan.from_json(data["plan"])
        data["inputs"]["manifest"]["path"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a saved plan (missing {exc})") from None
    return data


def manifest_path(data: dict[str, Any]) -> Path:
    return Path(data["inputs"]["manifest"]["path"])


def check(
    data: dict[str, Any],
    path: Path,
    manifest: Path,
    manifest_text: str,
    fresh: Plan,
    envs: dict[str, Environment],
) -> Plan:
    """Refuse unless the manifest, the `${env:}` values, the package and every remote
    value are what they were at plan time, and the same inputs still give the same
    actions. Returns the saved plan, which is what apply then runs."""
    inputs = data["inputs"]
    saved = Plan.from_json(data["plan"])
    if hashlib.sha256(manifest_text.encode()).hexdigest() != inputs["manifest"]["sha256"]:
        raise UserError(f"{path}: {manifest} changed since the plan was made; run plan again")
    if fresh.package.get("sha256") != inputs["package_sha256"]:
        raise UserError(
            f"{path}: the package now hashes {str(fresh.package.get('sha256'))[:12]}, the "
            f"plan was made for {str(inputs['package_sha256'])[:12]}; run plan again"
        )
    salt = bytes.fromhex(inputs["salt"])
    now = _sealed_secrets(fresh, envs, salt)
    before = {t.name: t for t in saved.targets}
    for target in fresh.targets:
        old = before.get(target.name)
        if old is None:
            raise UserError(f"{path}: target {target.name!r} is not in the saved plan")
        sealed = inputs["secrets"].get(target.name, {})
        if sealed.get("environment") != now[target.name]["environment"]:
            raise UserError(
                f"{path}: target {target.name!r}'s environment (a ${{env:…}} value) "
                "changed since the plan; run plan again"
            )
        changed = _first_difference(old.observed, target.observed)
        if changed is None and sealed.get("remote_environment") != now[target.name].get(
            "remote_environment"
        ):
            changed = "function.Environment"
        if changed is not None:
            raise UserError(
                f"{path}: the remote state of target {target.name!r} changed since the "
                f"plan ({changed}); run plan again"
            )
        if [a.to_json() for a in old.actions] != [a.to_json() for a in target.actions]:
            raise UserError(
                f"{path}: target {target.name!r}'s actions differ from what the manifest and "
                "remote state give now; run plan again"
            )
    return saved


def _first_difference(before: Any, after: Any, where: str = "") -> str | None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            found = _first_difference(before.get(key), after.get(key), f"{where}.{key}".lstrip("."))
            if found is not None:
                return found
        return None
    return None if before == after else (where or "state")
