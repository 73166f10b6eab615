"""The build image's job: image-run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pmcp_build.cli.app import (
    MANIFEST_NAME,
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


@app.command("image-run")
@guard
def image_run(
    source_url: SourceUrlOption = None,
    sha256: Sha256Option = None,
    s3: S3Option = None,
    python: PythonOption = None,
    architecture: ArchOption = None,
    allow_remote_requirements: Annotated[
        bool,
        typer.Option(
            "--allow-remote-requirements",
            help="Let the source's requirements use other indexes and direct URLs "
            "(default: refused for code the platform did not write).",
        ),
    ] = False,
) -> None:
    """The build image's job: ZIP_URL -> package -> S3_BUCKET/S3_KEY; JSON summary last."""
    import os

    from pmcp_build.image import require_inputs, run_job
    from pmcp_build.layout.requirements_policy import ALLOW_ENV
    from pmcp_build.manifest.manifestless import SynthInputs

    if allow_remote_requirements:
        os.environ[ALLOW_ENV] = "1"

    require_inputs(SynthInputs.from_env(source_url, sha256, s3, python, architecture))
    loaded, _ = load_with_text(Path(MANIFEST_NAME), source_url, sha256, s3, python, architecture)
    # stdout ends with the JSON summary, so the build stays quiet there.
    summary = run_job(
        loaded, lambda m: build_quietly(m, json_mode=True), lambda s: err.print(s, markup=False)
    )
    sys.stdout.write(json.dumps(summary) + "\n")
