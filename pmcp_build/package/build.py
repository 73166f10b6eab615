"""From a loaded manifest to a Layout and a deterministic zip (the package)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pmcp_build.errors import UserError
from pmcp_build.layout.binary import (
    ArtifactError,
    classify,
    raw_artifact_entries,
    zip_artifact_entries,
)
from pmcp_build.layout.model import (
    Entry,
    KeepBudget,
    Layout,
    entry_from_file,
    make_layout,
    normal_mode,
)
from pmcp_build.manifest.load import LoadedManifest
from pmcp_build.manifest.model import Asset, BinaryRuntime, PythonRuntime
from pmcp_build.package import cache as cache_store
from pmcp_build.package import rebuild, remote, remote_steps, zipwriter
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.write import (
    CacheDamaged,
    Package,
    dependency_set,
    layout_fingerprint,
    write_package,
)
from pmcp_build.source.globs import is_glob, matches
from pmcp_build.source.tree import SourceTree, load_source

if TYPE_CHECKING:
    # The Python runtime's modules (lock, uv, templates: ~20 ms of imports) are imported
    # where a Python package needs them; a binary package's build never does.
    from pmcp_build.layout import python_lock
    from pmcp_build.layout.python_deps import InstalledDeps

__all__ = [
    "Package",
    "build",
    "cache_dir",
    "layout_fingerprint",
    "resolve_layout",
    "write_package",
]


def resolve_layout(loaded: LoadedManifest, quiet: bool = True) -> Layout:
    manifest = loaded.manifest
    cache = cache_dir()
    ahead = _cold(loaded)
    tree = load_source(manifest.source, loaded.root, cache)
    runtime = manifest.runtime
    try:
        if isinstance(runtime, PythonRuntime):
            return _python_layout(loaded, runtime, tree, quiet, ahead)
        assert isinstance(runtime, BinaryRuntime)
        entries = artifact_entries(runtime, tree, ahead)
        entries += asset_entries(manifest.assets, tree, ahead)
        return make_layout(
            entries, "provided.al2023", "bootstrap", runtime.architecture, tree.left_out
        )
    except BaseException:
        zipwriter.drop_ahead()  # no zip to write: what was started ahead is not waited for
        raise


def _python_layout(
    loaded: LoadedManifest, runtime: PythonRuntime, tree: SourceTree, quiet: bool, ahead: bool
) -> Layout:
    from pmcp_build.layout import python as py
    from pmcp_build.layout import python_sources
    from pmcp_build.layout.python_deps import install

    manifest, cache = loaded.manifest, cache_dir()
    module = py.handler_module(tree)
    keep = KeepBudget()
    entries = [entry_from_file(f.path, f.abspath, "source", keep=keep) for f in tree.files]
    entries += py.boot_entries()
    requirements = py.requirements_file(runtime, tree)
    policy = {"source_root": tree.root, "remote_source": manifest.source.url is not None}
    command_deps: list[Entry] = []
    if runtime.command is not None:
        # A stdio command: its requirements in their own folder, the runtime's at
        # the root, so neither's mcp pin constrains the other.
        site = tree.root / py.COMMAND_PREFIX  # none: the command needs no requirements
        if requirements is not None:
            own = install(
                requirements,
                runtime.python,
                runtime.architecture,
                cache,
                quiet,
                with_boot=False,
                **policy,  # type: ignore[arg-type]
            )
            site = own.root
            command_deps = py.dependency_entries(own.root, own.origins)
        command = py.command_spec(runtime.command, tree, site)
        entries.append(py.index_entry(manifest.server.name, "", module, cache, command=command))
        deps, lock = _locked_dependencies(loaded, runtime, tree, cache, quiet, boot_only=True)
    else:
        if requirements is not None and python_sources.kind_of(requirements) == "requirements":
            py.check_mcp_pin(requirements)
        entrypoint = py.detect_entrypoint(runtime, tree)
        entries.append(py.index_entry(manifest.server.name, entrypoint, module, cache))
        deps, lock = _locked_dependencies(loaded, runtime, tree, cache, quiet)
    runtime_deps = py.dependency_entries(deps.root, deps.origins)
    entries += runtime_deps + py.command_entries(command_deps, runtime_deps)
    entries += asset_entries(manifest.assets, tree, ahead)
    if runtime.bytecode:
        entries += py.bytecode_entries(entries, runtime.python, cache)
    return make_layout(
        entries,
        f"python{runtime.python}",
        f"{module}.handler",
        runtime.architecture,
        tree.left_out,
        tuple(lock.lines()),
        lock.status != "locked",
    )


def _cold(loaded: LoadedManifest) -> bool:
    """Whether this build will surely deflate its big files: no earlier build of the
    project left a zip to reuse members from, and no remote cache may hand one over. Then
    big assets and the artifact are deflated as they are hashed (zipwriter's
    compress_ahead); otherwise that could be work for nothing."""
    out_dir = loaded.root / ".pmcp" / "dist"
    previous = out_dir / f".{loaded.manifest.server.name}.members.json"
    return not os.environ.get(remote.ENV, "").strip() and not previous.exists()


def lock_path(loaded: LoadedManifest, tree: SourceTree) -> tuple[Path, bool]:
    """Where the lock lives and whether builds may write it: beside the manifest, or
    (read only) in a downloaded source, which is never changed."""
    from pmcp_build.layout import python_lock

    if loaded.manifest.source.url is not None:
        return tree.root / python_lock.LOCK_NAME, False
    return loaded.root / python_lock.LOCK_NAME, True


def hold_lock(
    loaded: LoadedManifest,
    runtime: PythonRuntime,
    tree: SourceTree,
    *,
    boot_only: bool = False,
    upgrade: bool = False,
    check_only: bool = False,
) -> python_lock.Outcome:
    """The source's dependencies held to metorial.lock (resolved when stale; written
    beside the manifest, never into a downloaded source). `build` and `lock` share it."""
    from pmcp_build.layout import python_lock, python_sources

    path, writable = lock_path(loaded, tree)
    source = (
        None
        if boot_only
        else python_sources.detect(tree.root, runtime.requirements, runtime.extras)
    )
    return python_lock.lock_dependencies(
        source,
        runtime.python,
        runtime.architecture,
        path,
        source_root=tree.root,
        remote_source=not writable,
        writable=writable,
        upgrade=upgrade,
        check_only=check_only,
    )


def _locked_dependencies(
    loaded: LoadedManifest,
    runtime: PythonRuntime,
    tree: SourceTree,
    cache: Path,
    quiet: bool,
    boot_only: bool = False,
) -> tuple[InstalledDeps, python_lock.Outcome]:
    """The runtime's dependencies, exactly as metorial.lock names them (a stdio
    command's own requirements are installed apart, and not locked yet)."""
    from pmcp_build.layout import python_lock
    from pmcp_build.layout.python_deps import install

    outcome = hold_lock(loaded, runtime, tree, boot_only=boot_only)
    writable = lock_path(loaded, tree)[1]
    deps = install(
        None,
        runtime.python,
        runtime.architecture,
        cache,
        quiet=quiet,
        source_root=tree.root,
        remote_source=not writable,
        locked=python_lock.install_text(outcome.lock),
    )
    return deps, outcome


def artifact_entries(runtime: BinaryRuntime, tree: SourceTree, ahead: bool = False) -> list[Entry]:
    path = tree.root / runtime.artifact
    if not path.is_file():
        raise UserError(
            f"[runtime].artifact: {runtime.artifact!r} not found in {tree.root}; build it first "
            f"(e.g. `cargo lambda build --release{' --arm64' * (runtime.architecture == 'arm64')}`"
            ", or `cargo build --release` for this machine) or fix the path"
        )
    data = path.read_bytes()
    try:
        if classify(data[:4]) == "zip":
            entries = zip_artifact_entries(data, runtime.architecture, runtime.artifact)
        else:
            entries = raw_artifact_entries(data, runtime.architecture, runtime.artifact)
    except ArtifactError as exc:
        raise UserError(f"[runtime].artifact: {exc}") from exc
    for entry in entries if ahead else ():
        assert entry.data is not None  # an artifact's files are held, read once
        zipwriter.compress_ahead(entry.sha256, entry.data)
    return entries


def asset_entries(assets: tuple[Asset, ...], tree: SourceTree, ahead: bool = False) -> list[Entry]:
    """The files the [[assets]] name, read and hashed once (`ahead`: big ones deflated
    from those bytes at once, see _cold)."""
    entries: list[Entry] = []
    guard = _SourceGuard(tree.root)
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
        for _, path in found:
            guard.check(path, f"assets[{index}].from {src!r}")
        entries += [_asset_entry(dest, path, src, ahead) for dest, path in found]
    return entries


def _asset_entry(dest: str, path: Path, detail: str, ahead: bool) -> Entry:
    """entry_from_file's entry, with the bytes handed to the writer's compress_ahead
    before they are let go (a big asset is then read once, not twice)."""
    with open(path, "rb") as fh:
        data = fh.read()
        st_mode = os.fstat(fh.fileno()).st_mode
    digest = hashlib.sha256(data).hexdigest()
    if ahead:
        zipwriter.compress_ahead(digest, data)
    mode = normal_mode(st_mode)
    return Entry(dest, "asset", mode, len(data), digest, src=path, detail=detail)


class _SourceGuard:
    """An asset is a file of the source: not reached through a symlink, not outside.
    Folders already found to be plain folders inside it are not checked again (an asset
    folder of 500 files costs 500 lstat calls, not 500 path resolutions)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.plain: set[str] = set()  # folders under root, none of them a symlink

    def check(self, path: Path, what: str) -> None:
        root = self.root
        rel = path.relative_to(root) if path.is_relative_to(root) else None
        if rel is not None and ".." not in rel.parts:
            current = str(root)
            for part in rel.parts[:-1]:
                current = os.path.join(current, part)
                if current not in self.plain:
                    if os.path.islink(current):
                        break
                    self.plain.add(current)
            else:
                if not path.is_symlink():
                    return  # every component a plain entry under the root: inside
        self._check_slowly(path, rel, what)

    def _check_slowly(self, path: Path, rel: Path | None, what: str) -> None:
        root = self.root
        if rel is None or not path.resolve().is_relative_to(self.real_root):
            raise UserError(f"{what}: {path} is outside the source; assets must be files in it")
        current = root
        for part in rel.parts:
            current = current / part
            if current.is_symlink():
                raise UserError(
                    f"{what}: {current.relative_to(root).as_posix()} is a symlink; assets are "
                    "not read through symlinks (they could package the build machine's files); "
                    "copy the file in"
                )


def build(loaded: LoadedManifest, quiet: bool = True) -> Package:
    return package_layout(loaded, resolve_layout(loaded, quiet=quiet))


def package_layout(loaded: LoadedManifest, layout: Layout) -> Package:
    """Write the zip of a resolved layout into .pmcp/dist/, and record the inputs.

    A cached file the layout named that changed in the cache (found as its bytes are
    compressed: a dependency set's file, a .pyc, a downloaded source's file) has been
    warned about; its cache item is evicted and the layout resolved again, which makes
    it anew (reinstalled, recompiled, downloaded), once."""
    out_dir = loaded.root / ".pmcp" / "dist"
    name = loaded.manifest.server.name
    remote_steps.fetch_package(layout, out_dir, name)  # a shared cache's zip, checked
    try:
        package = write_package(layout, out_dir, name)
    except CacheDamaged as damaged:
        cache_store.evict(damaged.item)
        layout = resolve_layout(loaded)
        try:
            package = write_package(layout, out_dir, name)
        except CacheDamaged as again:
            raise UserError(
                f"{again.item}: changed again while the package was being built; is another "
                "process writing to the build cache? Remove it and build again"
            ) from None
    _record_inputs(loaded, layout, out_dir)
    remote_steps.publish_set(dependency_set(package.layout))
    remote_steps.publish_package(package.layout, package.path, package.sha256)
    return package


def _record_inputs(loaded: LoadedManifest, layout: Layout, out_dir: Path) -> None:
    """What the next `pmcp-build build` needs to skip loading the manifest when only file
    contents changed (package/rebuild.py). Python packages from a local folder only."""
    manifest, runtime = loaded.manifest, loaded.manifest.runtime
    if not isinstance(runtime, PythonRuntime) or manifest.source.url is not None:
        rebuild.forget(out_dir)
        return
    from pmcp_build.layout import python as py
    from pmcp_build.layout import python_lock, python_sources
    from pmcp_build.layout.python_deps import BOOT_REQUIREMENTS
    from pmcp_build.layout.requirements_policy import included_files

    source_root = (loaded.root / (manifest.source.path or ".")).resolve()
    strict = [
        loaded.path.resolve(),
        source_root / (runtime.requirements or "requirements.txt"),
        BOOT_REQUIREMENTS,
        py.BOOT_DIR,
        py.TEMPLATES / "index.py.j2",
    ]
    # Inputs that decide which files are packaged, or what is installed.
    strict += sorted(
        {source_root / ".gitignore"}
        | {e.src for e in layout.entries if e.path.endswith(".gitignore") and e.src}
    )
    strict += included_files(source_root / (runtime.requirements or "requirements.txt"))
    # The lock and every dependency source the detection reads.
    strict += [loaded.root / python_lock.LOCK_NAME]
    strict += [source_root / name for name in python_sources.DETECTION_ORDER]
    deps = dependency_set(layout)
    if deps is not None:
        strict += [deps / "origins.json", deps / "members.json"]
    rebuild.record(
        loaded.path.resolve(),
        source_root,
        out_dir,
        manifest.server.name,
        layout,
        strict,
        allow_edits=not runtime.bytecode,
    )
