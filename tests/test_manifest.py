from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import tomli
from pydantic import ValidationError

from pmcp_build.errors import UserError
from pmcp_build.manifest.load import parse_manifest
from pmcp_build.manifest.model import LambdaTarget, PythonRuntime
from pmcp_build.manifest.schema import schema_text

from .conftest import EXAMPLES, ROOT

BAD = sorted((Path(__file__).parent / "bad_manifests").glob("*.toml"))


def _expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 100


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifest_gives_one_actionable_line(cli, path: Path, tmp_path: Path) -> None:
    target = tmp_path / "metorial.toml"
    shutil.copy(path, target)
    result = cli("-C", str(tmp_path), "validate")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: metorial.toml"), lines[0]
    assert _expected(path) in lines[0]


def test_error_names_the_line() -> None:
    text = (
        '[server]\nname = "demo"\n\n[runtime]\nkind = "python"\n\n[targets.prod]\n'
        'kind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\nmemory = 1\n'
    )
    with pytest.raises(UserError) as info:
        parse_manifest(text, "m.toml")
    assert str(info.value).startswith("m.toml:11: targets.prod.memory:")


def test_models_are_frozen_and_defaults_fill_in() -> None:
    m = parse_manifest(
        '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
        '[targets.prod]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n'
    )
    assert isinstance(m.runtime, PythonRuntime)
    assert (m.runtime.python, m.runtime.architecture) == ("3.12", "arm64")
    target = m.targets["prod"]
    assert isinstance(target, LambdaTarget)
    assert (target.memory, target.timeout, target.role) == (512, 30, "auto")
    with pytest.raises(ValidationError):
        m.server.name = "other"  # type: ignore[misc]


def test_env_references_are_accepted_and_kept_verbatim() -> None:
    m = parse_manifest(
        '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
        '[targets.prod]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n'
        'environment = { TOKEN = "${env:MY_TOKEN}" }\n'
    )
    target = m.targets["prod"]
    assert isinstance(target, LambdaTarget)
    assert target.environment["TOKEN"] == "${env:MY_TOKEN}"


def test_checked_in_schema_is_current() -> None:
    checked_in = (ROOT / "schemas" / "metorial.schema.json").read_text()
    assert checked_in == schema_text(), (
        "schemas/metorial.schema.json is stale: run "
        "`pmcp-build schema > schemas/metorial.schema.json`"
    )


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*/metorial.toml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.parent.name)
def test_schema_validates_examples(path: Path) -> None:
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(tomli.loads(path.read_text()), schema)


def test_schema_rejects_what_the_models_reject() -> None:
    schema = json.loads(schema_text())
    bad = {"server": {"name": "Bad Name"}, "runtime": {"kind": "python"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    unknown = {"server": {"name": "ok"}, "runtime": {"kind": "python", "pyhton": "3.12"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unknown, schema)


def test_example_declares_the_schema_directive() -> None:
    for path in _examples():
        first = path.read_bytes().split(b"\n", 1)[0].decode()
        match = re.match(r"#:schema (.+)", first)
        assert match, path
        assert (path.parent / match.group(1)).resolve() == ROOT / "schemas/metorial.schema.json"


# -- validate --json, and rules that need the environment -------------------------------

_LAYERED = (
    '[server]\nname = "demo"\n[runtime]\nkind = "python"\n[targets.prod]\nkind = "lambda"\n'
    'function = "f"\nbucket = "my-bucket"\n'
    'layers = ["arn:aws:lambda:us-east-1:123456789012:layer:deps:3"]\n'
)


def test_validate_json_says_valid_and_what_it_read(cli, tmp_path: Path) -> None:
    (tmp_path / "metorial.toml").write_text(_LAYERED)
    (tmp_path / "server.py").write_text("")
    result = cli("-C", str(tmp_path), "validate", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "valid": True,
        "path": "metorial.toml",
        "server": "demo",
        "runtime": "python",
        "targets": {"prod": "lambda"},
    }


def test_validate_json_reports_the_error_on_stdout_and_stderr(cli, tmp_path: Path) -> None:
    (tmp_path / "metorial.toml").write_text(_LAYERED.replace('"f"', '"bad name"'))
    result = cli("-C", str(tmp_path), "validate", "--json")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is False
    assert verdict["error"].startswith("metorial.toml:7: targets.prod.function:")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {verdict['error']}"


def test_a_layer_outside_aws_region_is_refused_when_the_target_names_none(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "metorial.toml").write_text(_LAYERED)
    (tmp_path / "server.py").write_text("")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    for command in ("validate", "plan"):
        result = cli("-C", str(tmp_path), command)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: metorial.toml: targets.prod: layers[0]"), lines[0]
        assert "is in us-east-1, but the function is deployed to eu-west-1 (AWS_REGION" in lines[0]
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert cli("-C", str(tmp_path), "validate").exit_code == 0


@pytest.mark.parametrize(
    "role",
    [
        "arn:aws:iam::123456789012:role/" + "r" * 64,
        "arn:aws:iam::123456789012:role/service-role/my+role=,.@_-x",
        "arn:aws-cn:iam::123456789012:role/a/b/c/deployer",
    ],
)
def test_role_arns_iam_accepts_are_accepted(role: str) -> None:
    m = parse_manifest(
        '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
        f'[targets.prod]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\nrole = "{role}"\n'
    )
    target = m.targets["prod"]
    assert isinstance(target, LambdaTarget) and target.role == role


def test_the_same_function_in_two_regions_is_two_functions() -> None:
    m = parse_manifest(
        '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
        '[targets.eu]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n'
        'region = "eu-west-1"\n'
        '[targets.us]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n'
        'region = "us-east-1"\n'
    )
    assert set(m.targets) == {"eu", "us"}
