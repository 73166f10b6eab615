"""`pmcp-build lock`: resolve the dependencies into metorial.lock on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pmcp_build.cli.app import MANIFEST_NAME, ManifestOption, app, guard, load, out
from pmcp_build.errors import UserError


@app.command("lock")
@guard
def lock_cmd(
    file: ManifestOption = Path(MANIFEST_NAME),
    upgrade: Annotated[
        bool, typer.Option("--upgrade", "-U", help="Re-resolve to the newest allowed versions.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Change nothing; exit 1 when the lock is out of date (CI)."),
    ] = False,
) -> None:
    """Resolve the python dependencies (and the boot runtime's) into metorial.lock."""
    from pmcp_build.manifest.model import PythonRuntime
    from pmcp_build.package.build import cache_dir, hold_lock, lock_path
    from pmcp_build.source.tree import load_source

    if upgrade and check:
        raise typer.BadParameter("--upgrade changes the lock; --check never does")
    loaded = load(file)
    runtime = loaded.manifest.runtime
    if not isinstance(runtime, PythonRuntime):
        raise UserError(f"{loaded.path}: [runtime].kind is {runtime.kind!r}; only python is locked")
    tree = load_source(loaded.manifest.source, loaded.root, cache_dir())
    path, writable = lock_path(loaded, tree)
    if not writable and not check:
        raise UserError(
            f"{loaded.path}: the source is a download; its lock is {path.name} inside the "
            "archive, made where the source is developed"
        )
    outcome = hold_lock(loaded, runtime, tree, upgrade=upgrade, check_only=check)
    for line in outcome.lines():
        out.print(line, markup=False)
