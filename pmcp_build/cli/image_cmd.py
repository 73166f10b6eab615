"""The build image's job: image-run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pmcp_build.cli.app import (
    ArchOption,
    PythonOption,
    S3Option,
    Sha256Option,
    SourceUrlOption,
    app,
    build_quietly,
    err,
    guard,
    load_with_text,
)
from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME


@app.command("image-run")
@guard
def image_run(
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
) -> None:
    """The build image's job: ZIP_URL -> package -> S3_BUCKET/S3_KEY; JSON summary last."""
    from pmcp_build.deploy.apply import apply_target, make_plan
    from pmcp_build.manifest.manifestless import IMAGE_TARGET, SynthInputs, image_target

    inputs = SynthInputs.from_env(source_url, sha256, s3, python, architecture)
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
    loaded, _ = load_with_text(Path(MANIFEST_NAME), source_url, sha256, s3, python, architecture)
    target = image_target(loaded)
    package = build_quietly(loaded, json_mode=True)  # stdout ends with the JSON summary
    plan, desired = make_plan(loaded, package, [IMAGE_TARGET])
    steps = apply_target(loaded, package, plan.targets[0], desired[IMAGE_TARGET], lambda line: None)
    for step in steps:
        err.print(step, markup=False)
    summary = {
        "sha256": package.sha256,
        "code_sha256": package.code_sha256,
        "size": package.size,
        "s3": f"s3://{target.bucket}/{target.key}",
        "uploaded": bool(steps),
        "runtime": package.layout.runtime,
        "handler": package.layout.handler,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
