"""URL sources: a pinned zip downloaded within a deadline and a size cap, verified, and
unpacked safely into a content-addressed cache.

Limits (environment variables override the defaults): `PMCP_DOWNLOAD_TIMEOUT` seconds
for the whole download (default 300; a server that drips a byte every few seconds is
cut off, not waited for), `PMCP_DOWNLOAD_LIMIT_MB` (default 100), at most 10 redirects;
unpacked: 250 MB in all, 100 MB per entry, 50,000 entries, no entry expanding more
than 200:1, no absolute paths, `..`, symlinks, duplicates or file/folder clashes.

The unpacked tree (sources/<sha256>/tree/) is published whole by a rename, with
`files.json` beside it: every file's path, mode and sha256. Each use hashes the tree
against it (a source is small: a few ms); a tree that differs (a file edited, added,
removed, its mode changed) is one warning line and is downloaded and unpacked again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME
from pmcp_build.package import cache as cache_store
from pmcp_build.package import remote_steps

EXTRACT_LIMIT = 250 * 1024 * 1024
MEMBER_LIMIT = 100 * 1024 * 1024
RATIO_LIMIT = 200  # deflate tops out near 1032:1; honest source code is under 20:1
MEMBER_COUNT_LIMIT = 50_000
NAME_LIMIT = 1024  # bytes in an entry name (S3 keys and most filesystems stop near here)
READ_TIMEOUT = 30.0  # per socket read, within the overall deadline


def download_limit() -> int:
    return _env_number("PMCP_DOWNLOAD_LIMIT_MB", 100) * 1024 * 1024


def download_timeout() -> float:
    return float(_env_number("PMCP_DOWNLOAD_TIMEOUT", 300))


def _env_number(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise UserError(f"{name}={raw!r} must be positive")
    return value


def fetch_zip(url: str, sha256: str, cache_dir: Path, archive: Path | None = None) -> Path:
    """Download (unless `archive` holds it already), verify and unpack a source zip;
    cached by its sha256."""
    dest = cache_dir / "sources" / sha256
    if dest.exists():
        problem = _tree_problem(dest)
        if problem is None:
            return dest / "tree"
        if problem:  # "": written by an earlier version, without files.json
            cache_store.warn(dest, f"{dest}: {problem}; downloading {url} again")
        cache_store.evict(dest)
    with tempfile.TemporaryDirectory(prefix="pmcp-src-") as tmp:
        if archive is None:
            archive = Path(tmp) / "source.zip"
            digest = remote_steps.fetch_source(sha256, archive) or _download(url, archive)
        else:
            digest = sha256_file(archive)
        if digest != sha256:
            raise UserError(
                f"[source].url: {url} has sha256 {digest}, but [source].sha256 pins {sha256}; "
                "if the new archive is trusted, update sha256"
            )
        remote_steps.publish_source(sha256, archive)
        staging = Path(tmp) / "tree"
        safe_extract(archive, staging, label=url)
        _unwrap_single_folder(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        final = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=dest.parent))
        shutil.move(str(staging), final / "tree")
        (final / FILES).write_text(json.dumps(_tree_files(final / "tree"), sort_keys=True))
        (final / ".complete").write_text(url)
        try:
            os.replace(final, dest)
        except OSError:
            shutil.rmtree(final, ignore_errors=True)  # another build won the race
    return dest / "tree"


FILES = "files.json"


def _tree_files(tree: Path) -> dict[str, list[object]]:
    """Every file under `tree`: path -> [mode, sha256]; anything else that is not a
    folder (a symlink, a fifo: never unpacked, so put there since) -> ["not a file"]."""
    found: dict[str, list[object]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        base = Path(dirpath)
        rel = base.relative_to(tree).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            path = base / name
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                found[prefix + name] = ["not a file"]
                continue
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            found[prefix + name] = [mode, sha256_file(path)]
    return found


def _tree_problem(dest: Path) -> str | None:
    """What differs between a cached download and the files.json written with it: None
    when nothing, "" when it has no files.json (an earlier version's: not a warning)."""
    try:
        recorded = json.loads((dest / FILES).read_text())
        (dest / ".complete").stat()
    except (OSError, ValueError):
        return ""
    try:
        found = _tree_files(dest / "tree")
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if found == recorded:
        return None
    changed = sorted(set(found) ^ set(recorded)) or sorted(
        p for p in found if found[p] != recorded[p]
    )
    return f"tree/{changed[0]} differs from what was unpacked"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path) -> str:
    """Download within an overall deadline: the transfer runs on a worker thread and is
    abandoned (and its socket closed) when the deadline passes."""
    deadline = download_timeout()
    result: dict[str, Any] = {}
    state: dict[str, Any] = {}
    worker = threading.Thread(target=_download_into, args=(url, dest, result, state), daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        state["abandoned"] = True
        response = state.get("response")
        if response is not None:
            with contextlib.suppress(Exception):  # a stuck socket, from another thread
                response.close()
        raise UserError(
            f"[source].url: {url} did not finish downloading within {deadline:.0f} s "
            "(set PMCP_DOWNLOAD_TIMEOUT to allow longer)"
        )
    if "error" in result:
        raise result["error"]
    if "digest" not in result:
        raise UserError(f"[source].url: the download of {url} stopped without an answer")
    return str(result["digest"])


def _download_into(url: str, dest: Path, result: dict[str, Any], state: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    total = 0
    try:
        limit = download_limit()
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as resp, open(dest, "wb") as out:
            state["response"] = resp
            while chunk := resp.read1(1 << 20):
                if state.get("abandoned"):
                    return
                total += len(chunk)
                if total > limit:
                    raise UserError(
                        f"[source].url: {url} is larger than {limit // 2**20} MB "
                        "(PMCP_DOWNLOAD_LIMIT_MB); a server's source should be far smaller"
                    )
                digest.update(chunk)
                out.write(chunk)
        result["digest"] = digest.hexdigest()
    except UserError as exc:
        result["error"] = exc
    except urllib.error.HTTPError as exc:
        reason = " ".join(str(exc.reason).split())[:200]
        if "redirect" in reason.lower() or exc.code in (301, 302, 303, 307, 308):
            reason = f"too many redirects or a redirect loop ({reason})"
        result["error"] = UserError(f"[source].url: {url} answered HTTP {exc.code} {reason}")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        cause: object = getattr(exc, "reason", None) or exc
        result["error"] = UserError(f"[source].url: cannot download {url}: {cause}")
    except Exception as exc:
        result["error"] = UserError(
            f"[source].url: cannot download {url}: {type(exc).__name__}: {str(exc)[:200]}"
        )


def safe_extract(archive: Path, dest: Path, label: str) -> None:
    """Extract a zip, refusing anything that could write outside `dest` or explode.

    Everything an archive can do wrong (bad CRC, lying sizes, unsupported compression,
    encryption, names too long, a file where a folder must be) is one UserError."""
    try:
        _extract(archive, dest, label)
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise UserError(f"{label}: not a valid zip archive ({str(exc)[:200]})") from None
    except NotImplementedError as exc:
        raise UserError(f"{label}: uses an unsupported zip feature ({str(exc)[:200]})") from None
    except RuntimeError as exc:  # encrypted members
        raise UserError(f"{label}: cannot be read ({str(exc)[:200]})") from None
    except OSError as exc:
        raise UserError(
            f"{label}: cannot be unpacked ({exc.strerror or type(exc).__name__}); "
            "refusing the archive"
        ) from None
    except Exception as exc:  # zlib.error and other decoder failures
        raise UserError(
            f"{label}: corrupt archive ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _extract(archive: Path, dest: Path, label: str) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{label}: not a zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MEMBER_COUNT_LIMIT:
            raise UserError(f"{label}: {len(infos)} entries is more than {MEMBER_COUNT_LIMIT}")
        seen: set[str] = set()
        files: set[str] = set()
        folders: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            what = f"{label}: entry {name[:120]!r}"
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise UserError(f"{what} has an absolute path; refusing the archive")
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if ".." in parts:
                raise UserError(f"{what} contains '..' (path traversal); refusing the archive")
            if len(name.encode()) > NAME_LIMIT or any(len(p.encode()) > 255 for p in parts):
                raise UserError(
                    f"{what} has a name too long for a file system; refusing the archive"
                )
            if "\0" in name:
                raise UserError(f"{what} has a NUL in its name; refusing the archive")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UserError(f"{what} is a symlink; refusing the archive")
            key = "/".join(parts).rstrip("/").lower()
            if key in seen and not info.is_dir():
                raise UserError(f"{what} appears twice; refusing the archive")
            seen.add(key)
            if info.is_dir():
                folders.add(key)
            else:
                files.add(key)
            folders.update("/".join(parts[:i]).lower() for i in range(1, len(parts)))
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
        clash = sorted(files & folders)
        if clash:
            raise UserError(
                f"{label}: {clash[0][:120]!r} is both a file and a folder; refusing the archive"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if not parts:
                continue
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
                            f"{label}: entry {info.filename[:120]!r} is larger than it "
                            "declares; refusing the archive"
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
