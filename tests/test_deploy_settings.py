"""Issue 14 items 4 and 8: layers, VPC, reserved concurrency, ephemeral storage and
SnapStart end to end through the CLI against the moto server, and their diff on plain
data.

moto 5.2 gaps, filled where said: UpdateFunctionConfiguration ignores EphemeralStorage
and SnapStart, and every function reports SnapStart ApplyOn None. The `lambda_settings`
fixture teaches moto's in-process model what Lambda documents (both are applied and
read back; a published version of a SnapStart function reports OptimizationStatus On),
so these tests still go over HTTP through the CLI. GetFunction of a function whose
reserved concurrency is 0 reports no Concurrency in moto (AWS reports 0): that case is
tested with botocore's Stubber.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pmcp_build.deploy.targets import lambda_
from pmcp_build.deploy.targets.lambda_.model import LambdaState, RoleState
from pmcp_build.deploy.targets.lambda_.read import function_state
from pmcp_build.manifest.model import LambdaTarget

from .conftest import Recorder, _fn
from .helpers import HOST_PY
from .test_deploy_units import _deployed, _lambda, _ops


@pytest.fixture
def lambda_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.awslambda import models

    cls = models.LambdaFunction
    init, update, configuration = cls.__init__, cls.update_configuration, cls.get_configuration

    def __init__(self: Any, account_id: str, spec: dict[str, Any], *a: Any, **k: Any) -> None:
        init(self, account_id, spec, *a, **k)
        self._snapstart = (spec.get("SnapStart") or {}).get("ApplyOn") or "None"

    def update_configuration(self: Any, updates: dict[str, Any]) -> dict[str, Any]:
        if "EphemeralStorage" in updates:
            self.ephemeral_storage = updates["EphemeralStorage"]["Size"]
        if "SnapStart" in updates:
            self._snapstart = updates["SnapStart"]["ApplyOn"]
        return update(self, updates)  # type: ignore[no-any-return]

    def get_configuration(self: Any, on_create: bool = False) -> dict[str, Any]:
        config = configuration(self, on_create)
        apply_on = getattr(self, "_snapstart", "None")
        published = str(self.version) != "$LATEST"
        on = apply_on == "PublishedVersions" and published
        config["SnapStart"] = {"ApplyOn": apply_on, "OptimizationStatus": "On" if on else "Off"}
        return config  # type: ignore[no-any-return]

    monkeypatch.setattr(cls, "__init__", __init__)
    monkeypatch.setattr(cls, "update_configuration", update_configuration)
    monkeypatch.setattr(cls, "get_configuration", get_configuration)


def _layer(name: str) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("python/x.py", name)
    made = boto3.client("lambda").publish_layer_version(
        LayerName=name, Content={"ZipFile": buf.getvalue()}, CompatibleRuntimes=["python3.12"]
    )
    return str(made["LayerVersionArn"])


def _set(toml: Path, settings: str) -> None:
    """Replace the settings block of the prod target (after its memory line)."""
    text = toml.read_text()
    head, _, rest = text.partition("memory = 256\n")
    rest = rest.split("# --settings end\n", 1)[-1]
    toml.write_text(f"{head}memory = 256\n{settings}# --settings end\n{rest}")


def _apply(cli: Any, project: Path) -> Any:
    result = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert result.exit_code == 0, result.output
    return result


def _plan(cli: Any, project: Path, code: int) -> str:
    result = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert result.exit_code == code, result.output
    return str(result.stdout)


def _concurrency() -> Any:
    got = boto3.client("lambda").get_function_concurrency(FunctionName="tiny-prod")
    return got.get("ReservedConcurrentExecutions")


@pytest.mark.usefixtures("lambda_settings")
def test_settings_create_noop_change_drift_and_removal(cli, project: Path, moto_url: str) -> None:
    toml = project / "metorial.toml"
    deps1, extra1 = _layer("deps"), _layer("extra")
    deps2 = _layer("deps")
    assert deps2.endswith(":deps:2")
    _set(
        toml,
        f'layers = ["{deps1}"]\nreserved_concurrency = 5\nephemeral_storage = 1024\n'
        'vpc = { subnets = ["subnet-0123abcd"], security_groups = ["sg-0123abcd"] }\n',
    )
    created = cli("-C", str(project), "plan", "-t", "prod")
    assert f'Layers: (none) -> ["{deps1}"]' in created.stdout, created.stdout
    assert "EphemeralStorage: (none) -> 1024" in created.stdout
    assert "+ lambda tiny-prod concurrency lambda.put_function_concurrency" in created.stdout
    _apply(cli, project)
    fn = _fn()
    assert [layer["Arn"] for layer in fn["Layers"]] == [deps1]
    assert fn["EphemeralStorage"] == {"Size": 1024}
    assert fn["VpcConfig"]["SubnetIds"] == ["subnet-0123abcd"]
    assert fn["VpcConfig"]["SecurityGroupIds"] == ["sg-0123abcd"]
    assert _concurrency() == 5
    policy = boto3.client("iam").get_role_policy(
        RoleName="tiny-prod-pmcp-exec", PolicyName="pmcp-logs"
    )["PolicyDocument"]
    assert "ec2:CreateNetworkInterface" in json.dumps(policy)  # a VPC function needs ENIs

    # A second apply reads and writes nothing.
    recorder = Recorder(moto_url)
    recorder.start()
    again = _apply(cli, project)
    assert recorder.writes() == [], recorder.writes()
    assert "Apply complete" not in again.stdout

    # Change every setting.
    _set(
        toml,
        f'layers = ["{deps2}", "{extra1}"]\nreserved_concurrency = 7\nephemeral_storage = 2048\n'
        'vpc = { subnets = ["subnet-0123abcd", "subnet-89abcdef"], '
        'security_groups = ["sg-0123abcd"] }\n',
    )
    changed = _plan(cli, project, 2)
    assert f'Layers: ["{deps1}"] -> ["{deps2}", "{extra1}"]' in changed
    assert "EphemeralStorage: 1024 -> 2048" in changed
    assert "ReservedConcurrentExecutions: 5 -> 7" in changed
    assert '"subnet-89abcdef"' in changed
    _apply(cli, project)
    fn = _fn()
    assert [layer["Arn"] for layer in fn["Layers"]] == [deps2, extra1]
    assert fn["EphemeralStorage"] == {"Size": 2048}
    assert sorted(fn["VpcConfig"]["SubnetIds"]) == ["subnet-0123abcd", "subnet-89abcdef"]
    assert _concurrency() == 7
    _plan(cli, project, 0)

    # Drift by hand shows in the plan, and apply puts it back.
    lam = boto3.client("lambda")
    lam.update_function_configuration(
        FunctionName="tiny-prod", Layers=[deps1], EphemeralStorage={"Size": 512}
    )
    lam.put_function_concurrency(FunctionName="tiny-prod", ReservedConcurrentExecutions=50)
    drift = _plan(cli, project, 2)
    assert f'Layers: ["{deps1}"] -> ["{deps2}", "{extra1}"]' in drift
    assert "EphemeralStorage: 512 -> 2048" in drift
    assert "~ lambda tiny-prod concurrency lambda.put_function_concurrency" in drift
    assert "ReservedConcurrentExecutions: 50 -> 7" in drift
    _apply(cli, project)
    _plan(cli, project, 0)

    # Removing the keys puts Lambda's defaults back.
    _set(toml, "")
    removal = _plan(cli, project, 2)
    assert f'Layers: ["{deps2}", "{extra1}"] -> []' in removal
    assert "EphemeralStorage: 2048 -> 512" in removal
    assert "- lambda tiny-prod concurrency lambda.delete_function_concurrency" in removal
    assert '"SecurityGroupIds": []' in removal
    _apply(cli, project)
    fn = _fn()
    assert not fn.get("Layers")
    assert fn["EphemeralStorage"] == {"Size": 512}
    assert not (fn.get("VpcConfig") or {}).get("SubnetIds")
    assert _concurrency() is None
    _plan(cli, project, 0)


# -- SnapStart ------------------------------------------------------------------------------


SNAP_PY = HOST_PY if tuple(map(int, HOST_PY.split("."))) >= (3, 12) else "3.12"


@pytest.fixture
def snapstart_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project on a python SnapStart supports. The suite's wheelhouse holds wheels
    for the host python only: on an older host the package is built for the host python
    and labelled python3.12, which is all the deploy path reads of it."""
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace(f'python = "{HOST_PY}"', f'python = "{SNAP_PY}"'))
    if SNAP_PY == HOST_PY:
        return project
    from pmcp_build.cli import deploy_cmds

    real = deploy_cmds.build_and_check

    def build(loaded: Any, json_mode: bool) -> Any:
        runtime = loaded.manifest.runtime.model_copy(update={"python": HOST_PY})
        manifest = loaded.manifest.model_copy(update={"runtime": runtime})
        package, report = real(dataclasses.replace(loaded, manifest=manifest), json_mode)
        package.layout = package.layout.replace(runtime=f"python{SNAP_PY}")
        return package, report

    monkeypatch.setattr(deploy_cmds, "build_and_check", build)
    return project


def _alias_version() -> str:
    lam = boto3.client("lambda")
    return str(lam.get_alias(FunctionName="tiny-prod", Name="live")["FunctionVersion"])


@pytest.mark.usefixtures("lambda_settings")
def test_snapstart_publishes_and_serves_the_url_through_the_alias(
    cli, snapstart_project: Path
) -> None:
    project = snapstart_project
    toml = project / "metorial.toml"
    _set(toml, 'snapstart = true\nalias = "live"\n')
    planned = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    calls = [c for a in planned["targets"][0]["actions"] for c in a["calls"]]
    create = next(c for c in calls if c["operation"] == "create_function")
    assert create["params"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    ops = [c["operation"] for c in calls]
    # the version is published before the alias, the URL and its grants go on the alias
    assert ops.index("publish_version") < ops.index("create_alias")
    assert ops.index("create_alias") < ops.index("create_function_url_config")
    for call in calls:
        if call["operation"] in ("create_function_url_config", "add_permission"):
            assert call["params"]["Qualifier"] == "live", call
    first = _apply(cli, project)
    assert _fn()["SnapStart"]["ApplyOn"] == "PublishedVersions"
    assert _alias_version() == "1"
    assert "prod.version = 1" in first.stdout and "prod.alias = live" in first.stdout
    published = boto3.client("lambda").get_function_configuration(
        FunctionName="tiny-prod", Qualifier="1"
    )
    assert published["SnapStart"]["OptimizationStatus"] == "On"
    _plan(cli, project, 0)  # a version reporting On is the same as $LATEST's Off

    # snapstart alone publishes (no alias): turning it off is a configuration change.
    _set(toml, "")
    off = _plan(cli, project, 2)
    assert "SnapStart: PublishedVersions -> None" in off
    _apply(cli, project)
    assert _fn()["SnapStart"]["ApplyOn"] == "None"
    _plan(cli, project, 0)


def test_snapstart_alone_implies_publish(cli, snapstart_project: Path) -> None:
    project = snapstart_project
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace('url = { auth = "NONE" }\n', ""))
    _set(toml, "snapstart = true\n")
    planned = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    ops = [c["operation"] for a in planned["targets"][0]["actions"] for c in a["calls"]]
    assert "publish_version" in ops and "create_alias" not in ops
    shown = cli("-C", str(project), "plan", "-t", "prod").stdout
    assert "warning: lambda tiny-prod: snapstart applies to published versions only" in shown


@pytest.mark.parametrize(
    ("runtime", "settings", "says"),
    [
        ('python = "3.11"', 'snapstart = true\nalias = "live"', "needs python 3.12 or later"),
        ('python = "3.12"', "snapstart = true\nephemeral_storage = 1024", "ephemeral_storage"),
        ('python = "3.12"', "snapstart = true", "with a url needs an alias"),
    ],
)
def test_snapstart_refusals_are_one_line(
    cli, project: Path, runtime: str, settings: str, says: str
) -> None:
    toml = project / "metorial.toml"
    text = toml.read_text()
    start = text.index('python = "')
    text = text[:start] + runtime + text[text.index("\n", start) :]
    toml.write_text(text)
    _set(toml, settings + "\n")
    result = cli("-C", str(project), "plan", "-t", "prod")
    assert result.exit_code == 1, result.output
    assert says in result.stderr and "snapstart" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_snapstart_on_arm64_and_x86_64_is_accepted() -> None:
    from pmcp_build.manifest.load import parse_manifest

    for arch in ("arm64", "x86_64"):
        m = parse_manifest(
            f'[server]\nname = "d"\n[runtime]\nkind = "python"\npython = "3.13"\n'
            f'architecture = "{arch}"\n[targets.p]\nkind = "lambda"\nfunction = "f"\n'
            'bucket = "my-bucket"\nsnapstart = true\n'
        )
        target = m.targets["p"]
        assert isinstance(target, LambdaTarget) and target.publishes


# -- the diff on plain data -------------------------------------------------------------------

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:deps:3"
VPC = {"SubnetIds": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"]}


def _with_settings(**fn: Any) -> LambdaState:
    settings: dict[str, Any] = {
        "Layers": [{"Arn": LAYER, "CodeSize": 1}],
        "VpcConfig": {**VPC, "VpcId": "vpc-1"},
        "EphemeralStorage": {"Size": 1024},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    }
    state = _deployed(**{**settings, **fn})
    assert state.function is not None
    return replace(state, function=replace(state.function, concurrency=3))


def _settings(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "layers": (LAYER,),
        "vpc": VPC,
        "ephemeral_storage": 1024,
        "concurrency": 3,
    }
    args.update(over)
    return args


def test_settings_as_read_are_up_to_date() -> None:
    assert _ops(_lambda(_with_settings(), **_settings())) == []
    # subnets in another order, a VpcId Lambda adds: still the same
    state = _with_settings(VpcConfig={"SubnetIds": ["b", "a"], "SecurityGroupIds": ["s"]})
    vpc = {"SubnetIds": ["a", "b"], "SecurityGroupIds": ["s"]}
    assert _ops(_lambda(state, **_settings(vpc=vpc))) == []


def test_defaults_send_nothing_for_a_plain_function() -> None:
    actions = _lambda(LambdaState())
    params = actions[1].calls[0].params
    for key in ("Layers", "VpcConfig", "EphemeralStorage", "SnapStart"):
        assert key not in params, key
    assert _ops(_lambda(_deployed())) == []


def test_each_setting_changes_alone() -> None:
    state = _with_settings()
    cases = {
        "layers": ((LAYER.replace(":3", ":4"),), "Layers"),
        "ephemeral_storage": (4096, "EphemeralStorage"),
        "vpc": ({**VPC, "SecurityGroupIds": ["sg-89abcdef"]}, "VpcConfig"),
    }
    for arg, (value, field) in cases.items():
        actions = _lambda(state, **_settings(**{arg: value}))
        assert _ops(actions) == ["lambda.update_function_configuration"], arg
        update = next(a for a in actions if a.op == "lambda.update_function_configuration")
        assert [c.field for c in update.changes] == [field]
    moved = _lambda(state, **_settings(concurrency=9))
    assert _ops(moved) == ["lambda.put_function_concurrency"]


def test_removed_settings_go_back_to_lambda_defaults() -> None:
    actions = _lambda(
        _with_settings(), **_settings(layers=(), vpc=None, ephemeral_storage=512, concurrency=None)
    )
    update = next(a for a in actions if a.op == "lambda.update_function_configuration")
    params = update.calls[0].params
    assert params["Layers"] == []
    assert params["VpcConfig"] == {"SubnetIds": [], "SecurityGroupIds": []}
    assert params["EphemeralStorage"] == {"Size": 512}
    delete = next(a for a in actions if a.op == "lambda.delete_function_concurrency")
    assert delete.symbol == "-" and delete.calls[0].tolerate == ("ResourceNotFoundException",)


def test_snapstart_diff() -> None:
    on = _lambda(_deployed(), snapstart=True, publish=True)
    update = next(a for a in on if a.op == "lambda.update_function_configuration")
    assert update.calls[0].params["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert "lambda.publish_version" in _ops(on)
    state = _deployed(SnapStart={"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"})
    assert state.function is not None
    version = function_state(
        {
            "Version": "2",
            **_config(state.function),
            "SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"},
        }
    )
    state = replace(state, published=version)
    assert _ops(_lambda(state, snapstart=True, publish=True)) == []


def _config(fn: Any) -> dict[str, Any]:
    """A FunctionState back in GetFunctionConfiguration's form (what a version reports)."""
    return {
        "CodeSha256": fn.code_sha256,
        "Architectures": list(fn.architectures),
        "Runtime": fn.config.runtime,
        "Handler": fn.config.handler,
        "Role": fn.config.role,
        "MemorySize": fn.config.memory,
        "Timeout": fn.config.timeout,
        "Environment": {"Variables": dict(fn.environment)},
    }


def _stubbed_read(get_function: dict[str, Any]) -> dict[str, Any]:
    """`read` against Stubber: what AWS answers where moto differs."""
    lam = boto3.client(
        "lambda", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    iam = boto3.client(
        "iam", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(lam)
    stub.add_response("get_function", get_function, {"FunctionName": "f"})
    stub.add_client_error(
        "get_function_url_config",
        "ResourceNotFoundException",
        expected_params={"FunctionName": "f"},
    )
    # Every plan reads the resource policy (a public grant by hand is a warning).
    stub.add_client_error(
        "get_policy", "ResourceNotFoundException", expected_params={"FunctionName": "f"}
    )
    stub.activate()

    class Clients:
        pass

    clients = Clients()
    clients.lam, clients.iam = lam, iam  # type: ignore[attr-defined]
    return clients  # type: ignore[return-value]


def test_reserved_concurrency_zero_is_read_as_zero() -> None:
    """Stubber: AWS's GetFunction reports Concurrency 0 for a function stopped with
    reserved_concurrency = 0 (moto leaves it out), and a 0 wanted is then up to date."""
    from pmcp_build.deploy.targets import TargetInput
    from pmcp_build.deploy.targets.lambda_.tags import concurrency_actions
    from pmcp_build.manifest.load import parse_manifest
    from pmcp_build.manifest.secrets import Environment

    answer = {
        "Configuration": {"FunctionName": "f", "Role": "arn:aws:iam::123456789012:role/r"},
        "Concurrency": {"ReservedConcurrentExecutions": 0},
    }
    clients = _stubbed_read(answer)  # handed to read: no module to patch
    m = parse_manifest(
        '[server]\nname = "d"\n[runtime]\nkind = "python"\n[targets.p]\nkind = "lambda"\n'
        'function = "f"\nbucket = "my-bucket"\nrole = "arn:aws:iam::123456789012:role/r"\n'
        "reserved_concurrency = 0\n"
    )
    target = m.targets["p"]
    assert isinstance(target, LambdaTarget)
    given = TargetInput("p", target, "d", None, Environment({}, frozenset()), Path("."))
    state = lambda_.read(lambda_.desired(given), clients)
    assert state.function is not None and state.function.concurrency == 0
    assert concurrency_actions("f", 0, state.function.concurrency) == []
    assert [a.op for a in concurrency_actions("f", None, 0)] == [
        "lambda.delete_function_concurrency"
    ]


def test_leaving_the_vpc_narrows_the_auto_role_after_the_function() -> None:
    from pmcp_build.deploy import aws

    arn = "arn:aws:iam::1:role/f-pmcp-exec"
    inside = _deployed(VpcConfig={**VPC, "VpcId": "vpc-1"}, Role=arn)
    wide = aws.logs_policy("f")
    wide["Statement"].append({"Effect": "Allow", "Action": ["ec2:CreateNetworkInterface"]})
    inside = replace(inside, role=RoleState(arn, wide))
    ops = _ops(_lambda(inside, role="auto", vpc=None))
    assert ops == ["lambda.update_function_configuration", "iam.put_role_policy"]
    # entering it: the grants first
    outside = replace(_deployed(Role=arn), role=RoleState(arn, aws.logs_policy("f")))
    ops = _ops(_lambda(outside, role="auto", vpc=VPC))
    assert ops == ["iam.put_role_policy", "lambda.update_function_configuration"]


def test_saved_plan_refuses_when_a_setting_drifted_since(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    _set(toml, "reserved_concurrency = 5\nephemeral_storage = 1024\n")
    _apply(cli, project)
    _set(toml, "reserved_concurrency = 6\nephemeral_storage = 1024\n")
    saved = cli("-C", str(project), "plan", "-t", "prod", "--out", ".pmcp/p.bin")
    assert saved.exit_code == 0, saved.output
    boto3.client("lambda").put_function_concurrency(
        FunctionName="tiny-prod", ReservedConcurrentExecutions=9
    )
    refused = cli("-C", str(project), "apply", ".pmcp/p.bin")
    assert refused.exit_code == 1, refused.output
    assert "changed since the plan (concurrency)" in refused.stderr
    assert _concurrency() == 9  # nothing was written
