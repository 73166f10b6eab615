"""`pmcp-build outputs`: what a deployed target is, read from where it lives (as
Terraform's `output`, but pmcp-build keeps no state file: the function, its alias and
URL, the object in S3 or .pmcp/deployments/ are the record).

A lambda function carries the sha256 of the package it runs in its `pmcp-build:package`
tag, from which the artifact's key follows (it is content-addressed); the version is
the alias's when there is one, else the newest published one (or $LATEST). Reads only;
nothing is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    JsonOption,
    ManifestOption,
    TargetsOption,
    app,
    check_targets,
    emit_json,
    guard,
    load,
    out,
)
from pmcp_build.errors import UserError

if TYPE_CHECKING:
    from pmcp_build.manifest.load import LoadedManifest
    from pmcp_build.manifest.model import LambdaTarget, S3Target


@app.command()
@guard
def outputs(
    target: TargetsOption = None,
    file: ManifestOption = Path(MANIFEST_NAME),
    json_out: JsonOption = False,
) -> None:
    """Show what a deployed target is: function ARN, URL, alias, artifact, package sha256."""
    loaded = load(file)
    names = check_targets(loaded, target)
    if not names:
        raise UserError(f"{loaded.path}: no targets declared; add a [targets.NAME] table")
    found = {name: read_outputs(loaded, name) for name in names}
    if json_out:
        emit_json(found)
        return
    for name, values in found.items():
        for key, value in values.items():
            if value is not None:
                out.print(f"{name}.{key} = {value}", markup=False)


def read_outputs(loaded: LoadedManifest, name: str) -> dict[str, Any]:
    from pmcp_build.deploy import aws
    from pmcp_build.manifest.model import LambdaTarget, S3Target

    t = loaded.manifest.targets[name]
    if not isinstance(t, LambdaTarget | S3Target):
        return _local_outputs(loaded, name)
    with aws.translating(f"target {name!r}: reading its outputs"):
        if isinstance(t, S3Target):
            return _s3_outputs(name, t)
        return _lambda_outputs(name, t, loaded.manifest.server.name)


def _local_outputs(loaded: LoadedManifest, name: str) -> dict[str, Any]:
    path = loaded.root / ".pmcp" / "deployments" / name
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"target {name!r}: nothing deployed at {path}; run `pmcp-build apply -t {name}`"
        ) from None
    return {"path": str(path), "package_sha256": _sha(state.get("sha256"))}


def _s3_outputs(name: str, t: S3Target) -> dict[str, Any]:
    from pmcp_build.deploy import aws

    head = aws.head_object(aws.clients(aws.connection(t)).s3, t.bucket, t.key)
    if head is None:
        raise UserError(
            f"target {name!r}: s3://{t.bucket}/{t.key} does not exist; nothing deployed "
            f"yet (run `pmcp-build apply -t {name}`)"
        )
    return {
        "s3": f"s3://{t.bucket}/{t.key}",
        "bucket": t.bucket,
        "key": t.key,
        "package_sha256": _sha((head.get("Metadata") or {}).get("sha256")),
    }


def _lambda_outputs(name: str, t: LambdaTarget, server: str) -> dict[str, Any]:
    from pmcp_build.deploy import aws
    from pmcp_build.manifest.model import TAG_PREFIX

    lam = aws.clients(aws.connection(t)).lam
    found = aws.absent_as_none(
        lambda: lam.get_function(FunctionName=t.function), "ResourceNotFoundException"
    )
    if found is None:
        raise UserError(
            f"target {name!r}: function {t.function!r} does not exist in "
            f"{lam.meta.region_name}; nothing deployed yet (run `pmcp-build apply -t {name}`)"
        )
    arn = found["Configuration"]["FunctionArn"]
    sha = _sha((found.get("Tags") or {}).get(f"{TAG_PREFIX}package"))
    url = aws.absent_as_none(
        lambda: lam.get_function_url_config(
            FunctionName=t.function, **({"Qualifier": t.alias} if t.alias else {})
        ),
        "ResourceNotFoundException",
    )
    return {
        "function_arn": arn,
        "version": _version(lam, t),
        "alias": t.alias,
        "alias_arn": f"{arn}:{t.alias}" if t.alias else None,
        "url": (url or {}).get("FunctionUrl"),
        **_artifact(t, server, sha),
        "package_sha256": sha,
    }


def _version(lam: Any, t: LambdaTarget) -> str | None:
    """What is served: the alias's version, else the newest published one (or $LATEST)."""
    from pmcp_build.deploy import aws

    if t.alias is not None:
        alias = aws.absent_as_none(
            lambda: lam.get_alias(FunctionName=t.function, Name=t.alias),
            "ResourceNotFoundException",
        )
        return None if alias is None else str(alias["FunctionVersion"])
    if not t.publishes:
        return "$LATEST"
    versions = [
        v["Version"]
        for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=t.function)
        for v in page.get("Versions") or []
        if str(v.get("Version", "")).isdigit()
    ]
    return max(versions, key=int) if versions else "$LATEST"


def _artifact(t: LambdaTarget, server: str, sha: str | None) -> dict[str, Any]:
    if sha is None:  # a function pmcp-build did not tag: its artifact is not known
        return {"bucket": None, "key": None}
    from pmcp_build.deploy.targets.lambda_.model import artifact_key

    return {"bucket": t.bucket, "key": artifact_key(t.prefix, server, sha)}


def _sha(value: Any) -> str | None:
    """A sha256 read back from a tag or a file, or None when it is not one."""
    text = str(value or "")
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None
