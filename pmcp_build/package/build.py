"""From a loaded manifest to a Layout and a deterministic zip (the package)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.layout import python as py
from pmcp_build.layout.binary import (
    ArtifactError,
    classify,
    raw_artifact_entries,
    zip_artifact_entries,
)
from pmcp_build.layout.model import Entry, Layout, entry_from_file, make_layout
from pmcp_build.layout.python_deps import install
from pmcp_build.manifest.load import LoadedManifest
from pmcp_build.manifest.model import Asset, BinaryRuntime, PythonRuntime
from pmcp_build.package import cache as cache_store
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.zipwriter import (
    FORMAT,
    MemberCache,
    MemberPack,
    index_zip,
    write_pack,
    write_zip,
)
from pmcp_build.source.globs import is_glob, matches
from pmcp_build.source.tree import SourceTree, load_source

__all__ = ["Package", "build", "cache_dir", "resolve_layout", "write_package"]


@dataclass(frozen=True)
class Package:
    layout: Layout
    path: Path
    sha256: str
    size: int

    @property
    def code_sha256(self) -> str:
        """What Lambda reports as CodeSha256: base64 of the zip's sha256 digest."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def sha12(self) -> str:
        return self.sha256[:12]


def resolve_layout(loaded: LoadedManifest, quiet: bool = True) -> Layout:
    manifest = loaded.manifest
    cache = cache_dir()
    tree = load_source(manifest.source, loaded.root, cache)
    runtime = manifest.runtime
    entries: list[Entry] = []
    if isinstance(runtime, PythonRuntime):
        module = py.handler_module(tree)
        entries += [entry_from_file(f.path, f.abspath, "source") for f in tree.files]
        entries += py.boot_entries()
        requirements = py.requirements_file(runtime, tree)
        if runtime.command is not None:
            # A stdio command: its requirements in their own folder, the runtime's at
            # the root, so neither's mcp pin constrains the other.
            site = tree.root / py.COMMAND_PREFIX  # none: the command needs no requirements
            if requirements is not None:
                own = install(
                    requirements, runtime.python, runtime.architecture, cache, quiet, False
                )
                site = own.root
                entries += [
                    dataclasses.replace(e, path=f"{py.COMMAND_PREFIX}/{e.path}")
                    for e in py.dependency_entries(own.root, own.origins)
                ]
            command = py.command_spec(runtime.command, tree, site)
            entries.append(py.index_entry(manifest.server.name, "", module, cache, command=command))
            requirements = None
        else:
            if requirements is not None:
                py.check_mcp_pin(requirements)
            entrypoint = py.detect_entrypoint(runtime, tree)
            entries.append(py.index_entry(manifest.server.name, entrypoint, module, cache))
        deps = install(requirements, runtime.python, runtime.architecture, cache, quiet=quiet)
        entries += py.dependency_entries(deps.root, deps.origins)
        entries += asset_entries(manifest.assets, tree)
        if runtime.bytecode:
            entries += py.bytecode_entries(entries, runtime.python, cache)
        return make_layout(
            entries, f"python{runtime.python}", f"{module}.handler", runtime.architecture
        )
    assert isinstance(runtime, BinaryRuntime)
    entries += artifact_entries(runtime, tree)
    entries += asset_entries(manifest.assets, tree)
    return make_layout(entries, "provided.al2023", "bootstrap", runtime.architecture)


def artifact_entries(runtime: BinaryRuntime, tree: SourceTree) -> list[Entry]:
    path = tree.root / runtime.artifact
    if not path.is_file():
        raise UserError(
            f"[runtime].artifact: {runtime.artifact!r} not found in {tree.root}; build it first "
            "(e.g. `cargo lambda build --release --arm64`) or fix the path"
        )
    data = path.read_bytes()
    try:
        if classify(data[:4]) == "zip":
            return zip_artifact_entries(data, runtime.architecture, runtime.artifact)
        return raw_artifact_entries(data, runtime.architecture, runtime.artifact)
    except ArtifactError as exc:
        raise UserError(f"[runtime].artifact: {exc}") from exc


def asset_entries(assets: tuple[Asset, ...], tree: SourceTree) -> list[Entry]:
    entries: list[Entry] = []
    for index, asset in enumerate(assets):
        src = asset.from_
        base = tree.root / src
        found: list[tuple[str, Path]] = []
        if is_glob(src):
            # Files land under `to` relative to the pattern's fixed leading folders:
            # data/*.db -> to/x.db, data/**/*.md -> to/sub/y.md.
            parts = src.split("/")
            anchor = "/".join(parts[: next(i for i, p in enumerate(parts) if is_glob(p))])
            for path in sorted(tree.root.rglob("*")):
                rel = path.relative_to(tree.root).as_posix()
                if path.is_file() and matches(rel, (src,)) and rel.startswith(anchor):
                    inner = rel[len(anchor) :].lstrip("/") if anchor else rel
                    found.append((f"{asset.to}/{inner}", path))
        elif base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found.append((f"{asset.to}/{path.relative_to(base).as_posix()}", path))
        elif base.is_file():
            found.append((asset.to, base))
        if not found:
            raise UserError(
                f"assets[{index}].from: {src!r} matches nothing in {tree.root}; "
                "fix the path or remove the asset"
            )
        entries += [entry_from_file(dest, path, "asset", detail=src) for dest, path in found]
    return entries


def layout_fingerprint(layout: Layout) -> str:
    """The zip is a pure function of this (and of the writer's format)."""
    h = hashlib.sha256(f"zip-v2 {FORMAT}\n".encode())
    for e in layout.entries:
        h.update(f"{e.path}\0{e.mode:o}\0{e.sha256}\n".encode())
    return h.hexdigest()


def dependency_set(layout: Layout) -> Path | None:
    """The cached dependency set (deps/<key>/) the layout's dependency files come from."""
    for e in layout.entries:
        if e.origin == "dependency" and e.src is not None:
            site = e.src.parents[e.path.count("/")]  # src is <set>/site/<path>
            return site.parent
    return None


def _reuse(index: Path, out_dir: Path, name: str) -> tuple[str, Path] | None:
    """The zip of an earlier build of the same layout, if it is still there unchanged.

    The index records the zip's sha256 and its size and mtime when written: matching
    size and mtime_ns stand for an unchanged file (as git's index does), so a warm build
    does not re-hash the package."""
    try:
        digest, size, mtime_ns = index.read_text().split()
        existing = out_dir / f"{name}-{digest[:12]}.zip"
        st = existing.stat()
    except (OSError, ValueError):
        return None
    if st.st_size != int(size) or st.st_mtime_ns != int(mtime_ns):
        return None
    cache_store.touch(index)
    return digest, existing


def write_package(layout: Layout, out_dir: Path, name: str) -> Package:
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir()
    index = root / "packages" / layout_fingerprint(layout)
    deps = dependency_set(layout)
    reused = _reuse(index, out_dir, name)
    if reused is not None:
        digest, final = reused
    else:
        # Unchanged members come out of the previous build's zip and the dependency
        # set's pack: two mmaps, whatever the file count.
        previous = MemberPack(out_dir / f".{name}.members.json")
        dep_pack = MemberPack(deps / "members.json") if deps is not None else None
        packs = (previous, dep_pack) if dep_pack is not None else (previous,)
        tmp = out_dir / f".{name}-building.zip"
        digest, written = write_zip(layout, tmp, MemberCache(packs))
        final = out_dir / f"{name}-{digest[:12]}.zip"
        os.replace(tmp, final)
        index_zip(out_dir / f".{name}.members.json", final, written)
        if deps is not None and dep_pack is not None and len(dep_pack) == 0:
            in_deps = [
                w for e, w in zip(layout.entries, written, strict=True) if e.origin == "dependency"
            ]
            write_pack(deps / "members.json", final, in_deps)
        st = final.stat()
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")
    for old in out_dir.glob(f"{name}-*.zip"):
        if old != final:  # dist/ holds the current build; deployments keep their own copy
            old.unlink(missing_ok=True)
    _record_uses(root, layout, index, deps, started)
    return Package(layout=layout, path=final, sha256=digest, size=final.stat().st_size)


def _record_uses(
    root: Path, layout: Layout, index: Path, deps: Path | None, started: float
) -> None:
    """What this build needed from the cache, so `pmcp-build cache prune` keeps it."""
    needed = [index]
    if deps is not None:
        needed.append(deps)
        cache_store.touch(deps / "used")
    inside = f"{root}{os.sep}"
    for e in layout.entries:
        if e.origin == "dependency":
            continue
        if e.src is not None and str(e.src).startswith(inside):
            needed.append(e.src)  # bytecode, a downloaded source
        if e.origin == "generated":
            needed += _rendered(root / "index", e)
    for item in cache_store.record_build(root, needed, started):
        if item.startswith("sources/"):
            cache_store.touch(root / item / "used")


def _rendered(folder: Path, entry: Entry) -> list[Path]:
    """The render cache's copy of a generated file (found by content: few, tiny files)."""
    try:
        candidates = [p for p in folder.iterdir() if p.stat().st_size == entry.size]
    except OSError:
        return []
    return [p for p in candidates if hashlib.sha256(p.read_bytes()).hexdigest() == entry.sha256]


def build(loaded: LoadedManifest, quiet: bool = True) -> Package:
    layout = resolve_layout(loaded, quiet=quiet)
    return write_package(layout, loaded.root / ".pmcp" / "dist", loaded.manifest.server.name)
