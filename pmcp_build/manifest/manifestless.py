"""Manifest-less builds: a metorial.toml synthesised from flags and the environment.

The build image contract (ZIP_URL, S3_BUCKET, S3_KEY) becomes an ordinary manifest
with a URL source and an `s3` target, parsed by the same loader as a committed one,
so the two roads cannot drift. A downloaded source that carries its own
metorial.toml is built from that manifest instead, with the S3 target added.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pmcp_build.errors import UserError
from pmcp_build.manifest.load import LoadedManifest, parse_manifest
from pmcp_build.manifest.model import MANIFEST_NAME, S3Target
from pmcp_build.manifest.scaffold import server_name
from pmcp_build.source.fetch import _download, fetch_zip

IMAGE_TARGET = "image"


@dataclass(frozen=True)
class SynthInputs:
    source_url: str | None = None
    sha256: str | None = None
    s3: str | None = None  # s3://bucket/key
    python: str = "3.12"
    architecture: str = "x86_64"
    name: str | None = None

    @classmethod
    def from_env(
        cls,
        source_url: str | None = None,
        sha256: str | None = None,
        s3: str | None = None,
        python: str | None = None,
        architecture: str | None = None,
        name: str | None = None,
    ) -> SynthInputs:
        env = os.environ
        if s3 is None and (env.get("S3_BUCKET") or env.get("S3_KEY")):
            bucket, key = env.get("S3_BUCKET"), env.get("S3_KEY")
            if not bucket:
                raise UserError("S3_KEY is set but S3_BUCKET is not; set both (or --s3 s3://B/K)")
            if not key:
                raise UserError("S3_BUCKET is set but S3_KEY is not; set both (or --s3 s3://B/K)")
            s3 = f"s3://{bucket}/{key}"
        return cls(
            source_url=source_url or env.get("ZIP_URL") or None,
            sha256=sha256 or env.get("ZIP_SHA256") or None,
            s3=s3,
            python=python or env.get("PYTHON_VERSION") or "3.12",
            architecture=architecture or env.get("ARCHITECTURE") or "x86_64",
            name=name,
        )

    @property
    def wanted(self) -> bool:
        return bool(self.source_url or self.s3)


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise UserError(f"--s3 {uri!r}: expected s3://BUCKET/KEY.zip")
    return parts.netloc, parts.path.lstrip("/")


def render(inputs: SynthInputs, sha256: str) -> str:
    assert inputs.source_url is not None
    base = inputs.name or (split_s3(inputs.s3)[1] if inputs.s3 else inputs.source_url)
    name = server_name(Path(urlsplit(base).path).name.removesuffix(".zip") or "mcp-server")
    lines = [
        "# Synthesised by pmcp-build from ZIP_URL / S3_BUCKET / S3_KEY; commit it to pin it.",
        "",
        "[server]",
        f'name = "{name}"',
        "",
        "[source]",
        f'url = "{inputs.source_url}"',
        f'sha256 = "{sha256}"',
        "",
        "[runtime]",
        'kind = "python"',
        f'python = "{inputs.python}"',
        f'architecture = "{inputs.architecture}"',
    ]
    if inputs.s3:
        bucket, key = split_s3(inputs.s3)
        lines += [
            "",
            f"[targets.{IMAGE_TARGET}]",
            'kind = "s3"',
            f'bucket = "{bucket}"',
            f'key = "{key}"',
        ]
    return "\n".join(lines) + "\n"


def pin(url: str, cache_dir: Path) -> str:
    """An unpinned ZIP_URL is pinned to what was downloaded (trust on first use)."""
    with tempfile.TemporaryDirectory(prefix="pmcp-pin-") as tmp:
        archive = Path(tmp) / "source.zip"
        digest = _download(url, archive)
        fetch_zip(url, digest, cache_dir, archive=archive)
    return digest


def synthesize(inputs: SynthInputs, cache_dir: Path, workdir: Path) -> tuple[LoadedManifest, str]:
    """The manifest for a manifest-less build, and its TOML text (for --print-manifest)."""
    if not inputs.source_url:
        raise UserError(
            f"no {MANIFEST_NAME} here and no source: set ZIP_URL (or --source-url), "
            "or run `pmcp-build init`"
        )
    sha256 = inputs.sha256 or pin(inputs.source_url, cache_dir)
    text = render(inputs, sha256)
    manifest = parse_manifest(text, "(synthesised manifest)")
    tree = fetch_zip(inputs.source_url, sha256, cache_dir)
    own = tree / MANIFEST_NAME
    if own.is_file():
        # The source knows best how to build itself; we only add where it goes.
        from pmcp_build.manifest.load import load_manifest

        loaded = load_manifest(own)
        targets = dict(loaded.manifest.targets)
        if inputs.s3:
            targets[IMAGE_TARGET] = manifest.targets[IMAGE_TARGET]
        # Same archive, same excludes; outputs (.pmcp/) go to the work dir, not the cache.
        source = manifest.source.model_copy(update={"exclude": loaded.manifest.source.exclude})
        updated = loaded.manifest.model_copy(update={"targets": targets, "source": source})
        return LoadedManifest(path=workdir / MANIFEST_NAME, manifest=updated), own.read_text()
    path = workdir / MANIFEST_NAME
    return LoadedManifest(path=path, manifest=manifest), text


def image_target(loaded: LoadedManifest) -> S3Target:
    target = loaded.manifest.targets.get(IMAGE_TARGET)
    if not isinstance(target, S3Target):
        raise UserError("no S3 destination: set S3_BUCKET and S3_KEY (or --s3 s3://B/K)")
    return target
