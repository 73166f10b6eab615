"""An s3 target: the package at a fixed key (the build image's S3_BUCKET/S3_KEY).

One read (HeadObject); the object's `sha256` metadata says which package it holds."""

from __future__ import annotations

from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Action, Call, Change, TargetPlan, noop, unread
from pmcp_build.deploy.targets.common import TargetInput
from pmcp_build.manifest.model import S3Target


def read(given: TargetInput[S3Target]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The object's state, and a warning when its bucket does not exist (one HeadBucket,
    only when the object is absent: S3 answers HeadObject alike for both)."""
    t = given.target
    with aws.translating(f"reading s3://{t.bucket}/{t.key}"):
        s3 = aws.clients(aws.connection(t)).s3
        head = aws.head_object(s3, t.bucket, t.key)
        if head is None:
            missing = aws.bucket_missing(s3, t.bucket)
            warnings = (f"s3 {given.name}: {aws.missing_bucket_warning(t.bucket)}",) * missing
            return {"exists": False, "sha256": None}, warnings
    return {"exists": True, "sha256": (head.get("Metadata") or {}).get("sha256")}, ()


def diff(*, bucket: str, key: str, sha256: str, state: dict[str, Any]) -> list[Action]:
    resource = f"s3://{bucket}/{key}"
    upload = (
        Call(
            "s3",
            "upload_artifact",
            {"Bucket": bucket, "Key": key, "Sha256": sha256, "Filename": {"$package": "path"}},
        ),
    )
    if not state.get("exists"):
        return [Action("s3.upload_artifact", "+", resource, "object does not exist", calls=upload)]
    if state.get("sha256") != sha256:
        change = (Change("sha256", state.get("sha256"), sha256),)
        return [
            Action(
                "s3.upload_artifact",
                "~",
                resource,
                "package changed",
                change,
                upload,
                {"sha256": state.get("sha256")},
            )
        ]
    return [noop(resource, "same sha256")]


def plan(given: TargetInput[S3Target], refresh: bool) -> TargetPlan:
    t = given.target
    state, warnings = read(given) if refresh else ({}, ())
    actions = diff(
        bucket=t.bucket,
        key=t.key,
        sha256=given.package.sha256 if given.package else "",
        state=state,
    )
    if not refresh:
        actions = unread(actions)
    return TargetPlan(
        name=given.name,
        kind="s3",
        actions=tuple(actions),
        connection=aws.connection(t),
        observed=state,
        outputs={"s3": f"s3://{t.bucket}/{t.key}"},
        refreshed=refresh,
        warnings=warnings,
    )


def destroy(given: TargetInput[S3Target]) -> TargetPlan:
    # An artifact in a bucket is never deleted by destroy: it may be what a function
    # elsewhere runs, and buckets are the user's.
    return TargetPlan(name=given.name, kind="s3", actions=())
