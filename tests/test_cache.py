"""`pmcp-build cache`: what the cache holds, pruning by age and size (least recently
used first), and never removing what the last build needed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pmcp_build.package.cache import Item, plan_prune

from .helpers import make_wheel, python_project


def _build(cli, project: Path) -> dict:
    result = cli("-C", str(project), "build", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _show(cli) -> dict:
    result = cli("cache", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_cache_shows_and_prunes_by_age_and_size_keeping_the_last_build(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "1.0")
    make_wheel(wheels, "tinypkg", "2.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    cache = tmp_path / "cache"
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(cache))
    old = python_project(tmp_path / "old", requirements="tinypkg==1.0\n")
    new = python_project(tmp_path / "new", requirements="tinypkg==2.0\n")
    first = _build(cli, old)
    last = _build(cli, new)

    shown = _show(cli)
    sets = {i["path"]: i for i in shown["items"] if i["kind"] == "dependency set"}
    assert len(sets) == 2
    needed = [p for p, i in sets.items() if i["needed_by_last_build"]]
    stale = [p for p, i in sets.items() if not i["needed_by_last_build"]]
    assert len(needed) == len(stale) == 1
    assert all(i["size"] > 0 and i["last_use"] > 0 for i in sets.values())
    assert shown["size"] == sum(i["size"] for i in shown["items"])
    text = cli("cache")
    assert text.exit_code == 0 and "dependency set" in text.stdout and str(cache) in text.stdout

    # Age: everything of the old project is 40 days old; the last build's items too,
    # yet those stay.
    for item in cache.rglob("*"):
        _age(item, 40)
    dry = cli("cache", "prune", "--max-age", "30d", "--dry-run")
    assert dry.exit_code == 0 and "would remove" in dry.stdout
    assert (cache / stale[0]).exists()
    pruned = cli("cache", "prune", "--max-age", "30d", "--json")
    assert pruned.exit_code == 0, pruned.output
    removed = {i["path"] for i in json.loads(pruned.stdout)["removed"]}
    assert stale[0] in removed
    assert not (cache / stale[0]).exists()
    assert (cache / needed[0]).exists()

    # Size: nothing the last build needed goes, however small the limit.
    tiny = cli("cache", "prune", "--max-size", "1")
    assert tiny.exit_code == 0 and "what the last build needed is kept" in tiny.stdout
    left = _show(cli)["items"]
    assert left and all(i["needed_by_last_build"] for i in left)
    # ...so the last build's project rebuilds from the cache, same bytes, no reinstall.
    again = _build(cli, new)
    assert again["package"]["sha256"] == last["package"]["sha256"]
    assert len(list((cache / "deps").iterdir())) == 1
    # The pruned project rebuilds too (reinstalling), to the same bytes as before.
    assert _build(cli, old)["package"]["sha256"] == first["package"]["sha256"]


def test_load_check_results_are_listed_and_kept_with_their_package(tmp_path: Path) -> None:
    """The load check's results (loadcheck/<layout fingerprint>.json) were invisible to
    `cache` and never pruned; one is needed while its package entry is."""
    from pmcp_build.package.cache import LAST_BUILD, inventory

    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "aaa").write_text("sha 1 2\n")
    (tmp_path / "loadcheck").mkdir()
    (tmp_path / "loadcheck" / "aaa.json").write_text("{}")
    (tmp_path / "loadcheck" / "bbb.json").write_text("{}")
    (tmp_path / LAST_BUILD).parent.mkdir()
    (tmp_path / LAST_BUILD).write_text(json.dumps({"started": 0, "items": ["packages/aaa"]}))
    checks = {i.path: i.needed for i in inventory(tmp_path) if i.kind == "load check"}
    assert checks == {"loadcheck/aaa.json": True, "loadcheck/bbb.json": False}


def test_prune_usage_errors_exit_2(cli) -> None:
    assert cli("cache", "prune").exit_code == 2
    bad = cli("cache", "prune", "--max-size", "lots")
    assert bad.exit_code == 2 and "500MB" in bad.output
    assert cli("cache", "prune", "--max-age", "3x").exit_code == 2


def test_plan_prune_is_least_recently_used_first() -> None:
    now = 1_000_000.0
    items = [
        Item("blob", "a", 10, now - 50, False),
        Item("blob", "b", 10, now - 40, True),  # oldest but one, needed: never removed
        Item("blob", "c", 10, now - 30, False),
        Item("blob", "d", 10, now - 20, False),
    ]
    by_size = plan_prune(items, max_size=20, max_age=None, now=now)
    assert [i.path for i in by_size.removed] == ["a", "c"]
    by_age = plan_prune(items, max_size=None, max_age=35, now=now)
    assert [i.path for i in by_age.removed] == ["a"]
    assert plan_prune(items, None, None, now).removed == []
