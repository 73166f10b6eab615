"""Getting the server's files: a local folder, or a pinned zip downloaded and unpacked.

Both roads end in a folder on disk and the list of files in it that may be packaged;
the URL road unpacks into a content-addressed cache after refusing anything hostile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME, Source

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

DOWNLOAD_LIMIT = 100 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0
EXTRACT_LIMIT = 250 * 1024 * 1024
MEMBER_LIMIT = 100 * 1024 * 1024
RATIO_LIMIT = 200  # deflate tops out near 1032:1; honest source code is under 20:1
MEMBER_COUNT_LIMIT = 50_000


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
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if ".gitignore" in filenames:
            rules.add_gitignore(rel_dir, Path(dirpath) / ".gitignore")
        kept = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            rel = rel_dir + d
            why = rules.why(rel, is_dir=True)
            if why is None and (full / "pyvenv.cfg").exists():
                why = "a virtualenv"
            if why is not None:
                if why not in ("always excluded",):
                    left_out.append((rel + "/", why))
                continue
            if full.is_symlink():
                raise UserError(
                    f"{rel}: is a symlink to a folder, which is not followed; "
                    "copy it in or add it to [source].exclude"
                )
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = rel_dir + name
            if rel == MANIFEST_NAME:
                continue
            why = rules.why(rel, is_dir=False)
            if why is not None:
                if why not in ("always excluded",):
                    left_out.append((rel, why))
                continue
            full = Path(dirpath) / name
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root) or not target.is_file():
                    raise UserError(
                        f"{rel}: symlink points outside the source ({os.readlink(full)}); "
                        "copy the file in or add it to [source].exclude"
                    )
            elif not stat.S_ISREG(full.lstat().st_mode):
                continue  # sockets, fifos: nothing to package
            files.append(SourceFile(rel, full))
    files.sort(key=lambda f: f.path)
    left_out.sort()
    return files, left_out


# -- URL sources -----------------------------------------------------------------------


def fetch_zip(url: str, sha256: str, cache_dir: Path, archive: Path | None = None) -> Path:
    """Download (unless `archive` holds it already), verify and unpack a source zip;
    cached by its sha256."""
    dest = cache_dir / "sources" / sha256
    if (dest / ".complete").exists():
        return dest / "tree"
    with tempfile.TemporaryDirectory(prefix="pmcp-src-") as tmp:
        if archive is None:
            archive = Path(tmp) / "source.zip"
            digest = _download(url, archive)
        else:
            digest = sha256_file(archive)
        if digest != sha256:
            raise UserError(
                f"[source].url: {url} has sha256 {digest}, but [source].sha256 pins {sha256}; "
                "if the new archive is trusted, update sha256"
            )
        staging = Path(tmp) / "tree"
        safe_extract(archive, staging, label=url)
        _unwrap_single_folder(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        final = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=dest.parent))
        shutil.move(str(staging), final / "tree")
        (final / ".complete").write_text(url)
        try:
            os.replace(final, dest)
        except OSError:
            shutil.rmtree(final, ignore_errors=True)  # another build won the race
    return dest / "tree"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> str:
    digest = hashlib.sha256()
    total = 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, open(dest, "wb") as out:
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > DOWNLOAD_LIMIT:
                    raise UserError(
                        f"[source].url: {url} is larger than {DOWNLOAD_LIMIT // 2**20} MB; "
                        "a server's source should be far smaller"
                    )
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise UserError(f"[source].url: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"[source].url: cannot download {url}: {reason}") from exc
    return digest.hexdigest()


def safe_extract(archive: Path, dest: Path, label: str) -> None:
    """Extract a zip, refusing anything that could write outside `dest` or explode."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{label}: not a zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MEMBER_COUNT_LIMIT:
            raise UserError(f"{label}: {len(infos)} entries is more than {MEMBER_COUNT_LIMIT}")
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            what = f"{label}: entry {name!r}"
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise UserError(f"{what} has an absolute path; refusing the archive")
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if ".." in parts:
                raise UserError(f"{what} contains '..' (path traversal); refusing the archive")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UserError(f"{what} is a symlink; refusing the archive")
            key = "/".join(parts).rstrip("/").lower()
            if key in seen and not info.is_dir():
                raise UserError(f"{what} appears twice; refusing the archive")
            seen.add(key)
            if info.file_size > MEMBER_LIMIT:
                raise UserError(f"{what} is {info.file_size} bytes, over the per-file cap")
            if (
                info.compress_size
                and info.file_size / info.compress_size > RATIO_LIMIT
                and info.file_size > 1 << 20
            ):
                raise UserError(
                    f"{what} expands {info.file_size // info.compress_size}:1, a zip bomb; "
                    "refusing the archive"
                )
            total += info.file_size
            if total > EXTRACT_LIMIT:
                raise UserError(
                    f"{label}: expands to more than {EXTRACT_LIMIT // 2**20} MB (zip bomb?); "
                    "refusing the archive"
                )
        dest.mkdir(parents=True, exist_ok=True)
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                # Declared sizes can lie; count what actually comes out.
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size or written > MEMBER_LIMIT:
                        raise UserError(
                            f"{label}: entry {info.filename!r} is larger than it declares; "
                            "refusing the archive"
                        )
                    out.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(0o755 if mode & 0o111 else 0o644)


def _unwrap_single_folder(root: Path) -> None:
    """GitHub-style archives put everything under NAME-REF/; lift it to the root."""
    children = [c for c in root.iterdir() if c.name not in ("__MACOSX",)]
    if len(children) == 1 and children[0].is_dir() and not (root / MANIFEST_NAME).exists():
        inner = children[0]
        tmp = root.parent / f".unwrap-{os.getpid()}"
        inner.rename(tmp)
        shutil.rmtree(root)
        tmp.rename(root)
