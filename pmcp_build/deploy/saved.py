"""Sealed plan files: `plan --out F` writes one, `apply F` runs exactly its actions or
refuses with one line saying what changed.

A saved plan holds the plan (actions with their exact calls, secrets by reference),
what it was made from (the manifest's path and sha256, the package sha256), every
remote value it diffed, and a digest over the canonical JSON of all of that, so an
edit to any part is caught. Secret values are never written: a target's resolved
environment and the function's current environment are kept only as scrypt digests
with a random per-plan salt (slow and salted: holding the file does not let anyone
confirm a guessed secret cheaply).

A saved plan is also bound to where it runs. The executor sends a target's calls to the
`connection` written in the plan, so apply first refuses any difference between that
and what the manifest gives now, then resolves the connection as plan did (region,
profile, each service's endpoint, and the account from STS GetCallerIdentity) and
refuses any difference from what plan recorded: a plan made against one account,
region or endpoint never runs against another, nor sends its `${env:}` values there.

The digest is a plain sha256 unless PMCP_BUILD_PLAN_KEY is set, when it is an HMAC
with that key. A plain digest catches edits, not forgery (anyone can recompute it), so
a plan file is then as trusted as the manifest; with the key set at apply, only a plan
sealed with the same key is accepted (plan and apply in different CI jobs share it as
a secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from pmcp_build import __version__
from pmcp_build.deploy.actions import FORMAT_VERSION, Plan, TargetPlan
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import Environment

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
KEY_VARIABLE = "PMCP_BUILD_PLAN_KEY"
# Every service a target's calls can go to: each one's endpoint is part of the binding.
_SERVICES = ("sts", "s3", "lambda", "iam")


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
    body: dict[str, Any] = {
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
            "connections": bindings(plan),
        },
    }
    key = _key()
    body["seal"] = "sha256" if key is None else "hmac-sha256"
    body["digest"] = _digest(body, key)
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def _key() -> bytes | None:
    key = os.environ.get(KEY_VARIABLE)
    return key.encode() if key else None


def _digest(body: dict[str, Any], key: bytes | None) -> str:
    if key is None:
        return hashlib.sha256(canonical(body)).hexdigest()
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def bindings(plan: Plan) -> dict[str, dict[str, Any]]:
    """Where each AWS target's calls go, resolved as they would be now."""
    return {t.name: binding(t) for t in plan.targets if t.connection}


def binding(target: TargetPlan) -> dict[str, Any]:
    """The region, profile, account and endpoints behind a target's connection. Only
    ever called with the connection the manifest gives (never one read from a file), so
    nothing is sent to an endpoint before it is checked."""
    from pmcp_build.deploy import aws

    conn = target.connection
    clients = aws.clients(conn)
    sts = clients.client("sts")
    with aws.translating(f"target {target.name!r}: reading the AWS account"):
        account = sts.get_caller_identity()["Account"]
    profile = (
        conn.get("profile")
        or os.environ.get("AWS_PROFILE")
        or os.environ.get("AWS_DEFAULT_PROFILE")
        or None
    )
    found = {"region": sts.meta.region_name, "profile": profile, "account": account}
    for service in _SERVICES:
        found[f"endpoint ({service})"] = clients.client(service).meta.endpoint_url
    return found


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
    _check_seal(data, path)
    try:
        Plan.from_json(data["plan"])
        data["inputs"]["manifest"]["path"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a saved plan (missing {exc})") from None
    return data


def _check_seal(data: dict[str, Any], path: Path) -> None:
    digest, seal, key = data.pop("digest", None), data.get("seal", "sha256"), _key()
    if key is not None and seal != "hmac-sha256":
        raise UserError(
            f"{path}: {KEY_VARIABLE} is set but the plan is not sealed with a key, so "
            f"anyone could have written it; run plan again with {KEY_VARIABLE} set"
        )
    if key is None and seal == "hmac-sha256":
        raise UserError(
            f"{path}: the plan is sealed with {KEY_VARIABLE}; set it to the key the plan "
            "was made with, or run plan again"
        )
    if not isinstance(digest, str) or not hmac.compare_digest(digest, _digest(data, key)):
        raise UserError(
            f"{path}: the plan file was edited after it was made (its digest does not "
            "match its content"
            + (f", or it was sealed with another {KEY_VARIABLE}" if key else "")
            + "); run plan again"
        )


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
    _check_bound(path, saved, fresh, inputs.get("connections"))
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


def _check_bound(path: Path, saved: Plan, fresh: Plan, recorded: Any) -> None:
    """Refuse, before anything is sent anywhere, a plan whose targets would run on
    another connection than the manifest and the environment give now."""
    now = {t.name: t for t in fresh.targets}
    for target in saved.targets:
        current = now.get(target.name)
        if current is None:
            continue  # check() names the target that is missing
        if target.kind != current.kind:
            raise UserError(
                f"{path}: target {target.name!r} is {target.kind} in the plan and "
                f"{current.kind} in the manifest; run plan again"
            )
        for field in sorted(set(target.connection) | set(current.connection)):
            before, after = target.connection.get(field), current.connection.get(field)
            if before != after:
                raise UserError(
                    f"{path}: target {target.name!r}'s connection.{field} is {before!r} "
                    f"in the plan and {after!r} in the manifest; run plan again"
                )
    planned = {t.name for t in saved.targets}
    for target in fresh.targets:
        if not target.connection or target.name not in planned:
            continue
        before = (recorded or {}).get(target.name) if isinstance(recorded, dict) else None
        if not isinstance(before, dict):
            raise UserError(
                f"{path}: the plan does not record the AWS connection of target "
                f"{target.name!r} (made by an older pmcp-build); run plan again"
            )
        _same_binding(path, target.name, before, binding(target))


def _same_binding(path: Path, name: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    for field in sorted(set(before) | set(after)):
        if before.get(field) != after.get(field):
            raise UserError(
                f"{path}: target {name!r} was planned against {field} "
                f"{before.get(field)!r} and would now run against {after.get(field)!r}; "
                "apply where the plan was made, or run plan again"
            )
