"""Property tests: whatever TOML reaches the loader and whatever bytes reach the
archive reader, the answer is a manifest / a tree, or one UserError line; never another
exception, never a write outside the destination."""

from __future__ import annotations

import io
import os
import string
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmcp_build.errors import UserError
from pmcp_build.manifest.load import parse_manifest
from pmcp_build.source.fetch import safe_extract

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

VALID = (
    '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
    '[targets.prod]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n'
    'environment = { LOG = "info" }\n[[assets]]\nfrom = "a"\nto = "b"\n'
)

toml_scalar = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=40),
)
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _toml_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else repr(value).replace("inf", "inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {_render(v)}" for k, v in value.items()) + "}"


def _check_loader(text: str) -> None:
    try:
        parse_manifest(text, "m.toml")
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert message.startswith("m.toml"), message


@SETTINGS
@given(st.text(alphabet=string.printable + "[]{}=\"'.#äß\u2028\x00", max_size=400))
def test_random_text_at_the_loader(text: str) -> None:
    _check_loader(text)


@SETTINGS
@given(
    st.sampled_from(["server", "runtime", "source", "targets.prod", "assets", "targets"]),
    st.text(max_size=20),
    toml_value,
)
def test_random_values_in_a_valid_manifest(table: str, key: str, value: object) -> None:
    line = f"{_toml_key(key)} = {_render(value)}"
    if table == "assets":
        text = VALID + line + "\n"
    else:
        text = (
            VALID.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)
            if f"[{table}]" in VALID
            else (f"[{table}]\n{line}\n" + VALID)
        )
    _check_loader(text)


def _valid_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("server.py", "print('hi')\n" * 20)
        zf.writestr("pkg/data.txt", "x" * 300)
        zf.writestr("pkg/sub/", "")
    return buf.getvalue()


ZIP = _valid_zip()


def _check_archive(data: bytes, tmp: Path) -> None:
    archive = tmp / "a.zip"
    archive.write_bytes(data)
    dest = tmp / "out" / "tree"
    before = set(os.listdir(tmp))
    try:
        safe_extract(archive, dest, "src.zip")
    except UserError as exc:
        assert "\n" not in str(exc)
    after = set(os.listdir(tmp))
    assert after <= before | {"out"}
    for path in (tmp / "out").rglob("*") if (tmp / "out").exists() else []:
        assert path.resolve().is_relative_to(dest.resolve()), path
        assert not path.is_symlink()


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_at_the_archive_reader(tmp_path_factory: object, data: bytes) -> None:
    _check_archive(data, _fresh(tmp_path_factory))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(ZIP) - 1), st.integers(0, 255)), max_size=8))
def test_mutated_zips_at_the_archive_reader(tmp_path_factory: object, flips: list) -> None:
    data = bytearray(ZIP)
    for offset, value in flips:
        data[offset] = value
    _check_archive(bytes(data), _fresh(tmp_path_factory))


@SETTINGS
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_hostile_member_names(tmp_path_factory: object, names: list[str]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), b"x")
    _check_archive(buf.getvalue(), _fresh(tmp_path_factory))


def _fresh(factory: object) -> Path:
    return factory.mktemp("prop")  # type: ignore[attr-defined, no-any-return]
