"""The build image's job: ZIP_URL → package → s3://S3_BUCKET/S3_KEY, through the same
manifest, build, plan and executor as every other deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pmcp_build.deploy.apply import execute
from pmcp_build.deploy.plan import make_plan
from pmcp_build.errors import UserError
from pmcp_build.manifest.manifestless import IMAGE_TARGET, SynthInputs, image_target

if TYPE_CHECKING:
    from pmcp_build.manifest.load import LoadedManifest
    from pmcp_build.package.build import Package


def require_inputs(inputs: SynthInputs) -> None:
    from pmcp_build.package import remote

    remote.configure(None)  # PMCP_BUILD_REMOTE_CACHE, checked before the download
    missing = [
        name
        for name, value in (("ZIP_URL", inputs.source_url), ("S3_BUCKET/S3_KEY", inputs.s3))
        if not value
    ]
    if missing:
        raise UserError(
            f"{' and '.join(missing)} not set; the build image needs ZIP_URL, "
            "S3_BUCKET and S3_KEY (or --source-url and --s3 s3://B/K)"
        )


def run_job(
    loaded: LoadedManifest, build: Callable[[LoadedManifest], Package], log: Callable[[str], Any]
) -> dict[str, Any]:
    """Build and upload; the summary the image prints as its last line."""
    target = image_target(loaded)
    package = build(loaded)
    plan, envs = make_plan(loaded, package, [IMAGE_TARGET])
    results = execute(plan, package.path, envs)
    steps = [step for r in results for step in r.steps]
    for step in steps:
        log(step)
    return {
        "sha256": package.sha256,
        "code_sha256": package.code_sha256,
        "size": package.size,
        "s3": f"s3://{target.bucket}/{target.key}",
        "uploaded": bool(steps),
        "runtime": package.layout.runtime,
        "handler": package.layout.handler,
    }
