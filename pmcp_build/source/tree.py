"""Getting the server's files: a local folder, or a pinned zip downloaded and unpacked.

Both roads end in a folder on disk and the list of files in it that may be packaged;
the URL road unpacks into a content-addressed cache after refusing anything hostile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME, Source
from pmcp_build.text import one_line

# Never packaged, whatever `exclude` says: VCS data, our own state, virtualenvs, caches.
ALWAYS_EXCLUDED = (
    ".git",
    ".hg",
    ".svn",
    ".pmcp",
    ".venv",
    "venv",
    "**/__pycache__",
    "*.pyc",
    "*.pyo",
    ".DS_Store",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
)

# Files that hold secrets by convention: never packaged, whatever the ignore files say,
# unless an [[assets]] entry names one explicitly.
SECRET_FILES = (".env", ".env.*", "*.env", ".envrc", ".netrc", ".pypirc", "*.pem", "id_rsa*")


@dataclass(frozen=True)
class SourceFile:
    path: str  # POSIX path relative to the source root
    abspath: Path


@dataclass(frozen=True)
class SourceTree:
    root: Path
    files: tuple[SourceFile, ...]
    # What the walk left out and why, for the build summary: (path, reason); a folder
    # is listed once, not file by file.
    left_out: tuple[tuple[str, str], ...] = ()

    def has(self, path: str) -> bool:
        return (self.root / path).is_file()


def load_source(source: Source, manifest_dir: Path, cache_dir: Path) -> SourceTree:
    if source.url is not None:
        from pmcp_build.source.fetch import fetch_zip  # urllib only when a URL is used

        assert source.sha256 is not None
        root = fetch_zip(source.url, source.sha256, cache_dir)
    else:
        root = (manifest_dir / (source.path or ".")).resolve()
        if not root.is_dir():
            raise UserError(f"[source].path: {root} is not a folder; fix the path")
    files, left_out = walk_tree(root, source.exclude)
    return SourceTree(root=root, files=tuple(files), left_out=tuple(left_out))


def walk(root: Path, exclude: tuple[str, ...]) -> list[SourceFile]:
    return walk_tree(root, exclude)[0]


def walk_tree(
    root: Path, exclude: tuple[str, ...]
) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """The files that may be packaged, and what was left out (and why).

    Honours `.gitignore` files at every level (with git's semantics, through pathspec)
    besides `exclude` and the always-excluded names; secret-like files are never listed.
    """
    from pmcp_build.source.ignore import IgnoreRules

    files: list[SourceFile] = []
    left_out: list[tuple[str, str]] = []
    rules = IgnoreRules(ALWAYS_EXCLUDED, exclude, SECRET_FILES)
    real_root = root.resolve()
    # Top-down and depth-first, as os.walk, so a folder's .gitignore is read before
    # anything under it; but with scandir's entries, whose kind (file, folder, symlink)
    # comes with the listing: no lstat per file on a 10k-file tree.
    pending = [(str(root), "")]
    while pending:
        folder, rel_dir = pending.pop()
        try:
            with os.scandir(folder) as listing:
                found = sorted(listing, key=lambda d: d.name)
        except OSError as exc:
            where = one_line(rel_dir) or "the source folder"
            raise UserError(
                f"{where}: cannot be read ({exc.strerror}); fix its permissions or add it "
                "to [source].exclude"
            ) from None
        if any(d.name == ".gitignore" for d in found):
            rules.add_gitignore(rel_dir, Path(folder) / ".gitignore")
        subfolders = []
        for d in found:
            rel = rel_dir + d.name
            is_link = d.is_symlink()
            if d.is_dir(follow_symlinks=False) or (is_link and _points_to_folder(d)):
                why = rules.why(rel, is_dir=True)
                if why is None and os.path.exists(os.path.join(d.path, "pyvenv.cfg")):
                    why = "a virtualenv"
                if why is not None:
                    if why != "always excluded":
                        left_out.append((rel + "/", why))
                    continue
                if is_link:
                    raise UserError(
                        f"{one_line(rel)}: is a symlink to a folder, which is not followed; "
                        "copy it in or add it to [source].exclude"
                    )
                subfolders.append((d.path, rel + "/"))
                continue
            if rel in (MANIFEST_NAME, "metorial.lock"):  # the build's inputs, not the server's
                continue
            why = rules.why(rel, is_dir=False)
            if why is not None:
                if why != "always excluded":
                    left_out.append((rel, why))
                continue
            full = Path(d.path)
            if is_link:
                try:
                    target = full.resolve()
                except (OSError, RuntimeError):  # a loop (3.11 raises RuntimeError)
                    raise UserError(
                        f"{one_line(rel)}: symlink cannot be resolved (a loop); remove it or "
                        "add it to [source].exclude"
                    ) from None
                if not target.is_relative_to(real_root) or not target.is_file():
                    raise UserError(
                        f"{one_line(rel)}: symlink points outside the source "
                        f"({one_line(os.readlink(full))}); copy the file in or add it to "
                        "[source].exclude"
                    )
            elif not d.is_file(follow_symlinks=False):
                continue  # sockets, fifos: nothing to package
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes, kept as surrogates by os
                shown = one_line(
                    rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                )
                raise UserError(
                    f"{shown}: the file name is not valid UTF-8, which a zip's names must be; "
                    "rename it or add it to [source].exclude"
                ) from None
            files.append(SourceFile(rel, full))
        pending.extend(reversed(subfolders))  # popped in name order
    files.sort(key=lambda f: f.path)
    left_out.sort()
    return files, left_out


def _points_to_folder(entry: os.DirEntry[str]) -> bool:
    """A symlink's target is a folder; False for a broken link or a loop (the file
    branch then reports it)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def check_declared_paths(
    source: Source, manifest_dir: Path, runtime: object, label: str = MANIFEST_NAME
) -> None:
    """What `validate` can say offline: the paths the manifest names exist. (A URL
    source's paths are checked when it is fetched, by build and plan.)"""
    if source.url is not None:
        return
    root = (manifest_dir / (source.path or ".")).resolve()
    if not root.is_dir():
        raise UserError(f"{label}: [source].path: {root} is not a folder; fix the path")
    for key in ("entrypoint", "requirements", "artifact"):
        value = getattr(runtime, key, None)
        if isinstance(value, str):
            path = value.split(":")[0] if key == "entrypoint" else value
            if not (root / path).is_file():
                raise UserError(
                    f"{label}: [runtime].{key}: {path!r} does not exist in {root}; fix the path"
                    + (" or build the artifact first" if key == "artifact" else "")
                )
