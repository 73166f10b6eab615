"""Issue 14's deploy items end to end through the CLI against the moto server (Stubber
where moto lacks a behaviour, said in the test), plus each diff on plain data."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from pmcp_build.deploy.actions import NOT_READ, Action, Change, unread

from .conftest import _fn

SECOND_LAMBDA = (
    '\n[targets.staging]\nkind = "lambda"\nfunction = "tiny-staging"\nbucket = "acme-artifacts"\n'
)


# -- 1. sharp edges -----------------------------------------------------------------------


def test_apply_with_several_lambdas_needs_t_or_all(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text() + SECOND_LAMBDA)
    refused = cli("-C", str(project), "apply", "--auto-approve")
    assert refused.exit_code == 2, refused.output
    assert "-t NAME" in refused.stderr and "--all" in refused.stderr
    assert "prod, staging" in refused.stderr
    with pytest.raises(botocore.exceptions.ClientError):
        _fn()  # nothing was deployed
    applied = cli("-C", str(project), "apply", "--auto-approve", "--all")
    assert applied.exit_code == 0, applied.output
    names = {f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]}
    assert names == {"tiny-prod", "tiny-staging"}


def test_plan_usage_errors_never_read_as_changes(cli, project: Path) -> None:
    changes = cli("-C", str(project), "plan", "--detailed-exitcode", "-t", "prod")
    assert changes.exit_code == 2, changes.output
    for bad in (
        ["--detailed-exitcode", "--no-such-flag"],
        ["--detailed-exitcod"],  # a typo in the flag itself
        ["--detailed-exitcode", "--refresh=maybe"],
    ):
        result = cli("-C", str(project), "plan", *bad)
        assert result.exit_code == 64, (bad, result.output)
    assert cli("-C", str(project), "apply", "--no-such-flag").exit_code == 2  # others keep 2


def test_offline_plan_says_not_read(cli, project: Path) -> None:
    result = cli("-C", str(project), "plan", "--no-refresh", "-t", "prod")
    assert result.exit_code == 0, result.output
    assert "(none) ->" not in result.stdout  # it never guesses "nothing exists"
    assert "MemorySize: (not read) -> 256" in result.stdout
    assert "  ? lambda tiny-prod lambda.create_function  # remote state not read" in result.stdout
    assert "Plan: remote state not read" in result.stdout
    assert "to add" not in result.stdout


def test_unread_marks_every_action_on_plain_data() -> None:
    actions = [
        Action("lambda.create_function", "+", "lambda f", "x", (Change("A", None, 1),)),
        Action("noop", "=", "s3://b/k", "same"),
    ]
    shown = unread(actions)
    assert [a.symbol for a in shown] == ["?", "="]
    assert shown[0].changes == (Change("A", NOT_READ, 1),)
    assert shown[0].reason == "remote state not read"


# -- 2. tags ------------------------------------------------------------------------------


def _tags() -> dict[str, str]:
    lam = boto3.client("lambda")
    return dict(lam.list_tags(Resource=_fn()["FunctionArn"])["Tags"])


def test_tags_created_merged_and_drift_fixed(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace("memory = 256\n", 'memory = 256\ntags = { team = "mcp" }\n', 1)
    )
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    tags = _tags()
    sha = tags.pop("pmcp-build:package")
    assert len(sha) == 64
    assert tags == {"team": "mcp", "pmcp-build:managed": "true", "pmcp-build:server": "tiny"}
    role = boto3.client("iam").list_role_tags(RoleName="tiny-prod-pmcp-exec")["Tags"]
    assert {t["Key"]: t["Value"] for t in role} == {
        "team": "mcp",
        "pmcp-build:managed": "true",
        "pmcp-build:server": "tiny",
    }
    # Drift by hand: a tag changed, one removed, one added.
    lam = boto3.client("lambda")
    arn = _fn()["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"team": "other", "stray": "x"})
    # (Not pmcp-build:managed: without it the function is no longer ours, and the plan
    # refuses it; see test_ownership.py.)
    lam.untag_resource(Resource=arn, TagKeys=["pmcp-build:server"])
    plan = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "~ lambda tiny-prod tags lambda.tag_resource  # tags drifted" in plan.stdout
    assert "Tags.team: other -> mcp" in plan.stdout
    assert "Tags.pmcp-build:server: (none) -> tiny" in plan.stdout
    assert "Tags.stray: x -> (none)" in plan.stdout
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _tags() == {**tags, "pmcp-build:package": sha}
    again = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ('{ "aws:x" = "1" }', "'aws:' prefix is reserved"),
        ('{ "pmcp-build:server" = "1" }', "pmcp-build's own"),
        ('{ "a#b" = "1" }', "1-128 characters"),
        ('{ k = "' + "v" * 257 + '" }', "at most 256"),
    ],
)
def test_bad_tags_are_one_line(cli, project: Path, tags: str, says: str) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256\n", f"memory = 256\ntags = {tags}\n"))
    result = cli("-C", str(project), "plan", "-t", "prod")
    assert result.exit_code == 1
    assert says in result.stderr and "tags" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tag_diff_on_plain_data() -> None:
    from pmcp_build.deploy.targets.lambda_.tags import tag_action as _tag_action

    assert _tag_action("f", "arn:f", {"a": "1"}, {"a": "1"}) is None
    action = _tag_action("f", "arn:f", {"a": "1", "b": "2", "aws:c": "3"}, {"a": "9", "d": "4"})
    assert action is not None
    assert [(c.operation, c.params) for c in action.calls] == [
        ("tag_resource", {"Resource": "arn:f", "Tags": {"a": "9", "d": "4"}}),
        ("untag_resource", {"Resource": "arn:f", "TagKeys": ["b"]}),
    ]


def test_a_remote_value_cannot_add_lines_to_the_plan() -> None:
    """A tag someone set on the function is shown in the plan's drift; a newline in it
    printed as a line of its own (here a fake "No changes")."""
    from pmcp_build.deploy.actions import Plan, TargetPlan
    from pmcp_build.deploy.plan import render
    from pmcp_build.deploy.targets.lambda_.tags import tag_action as _tag_action

    action = _tag_action("f", "arn:f", {"a": "x\nNo changes. \x1b[2K"}, {"a": "1"})
    assert action is not None
    lines = render(Plan("s", {}, (TargetPlan("prod", "lambda", (action,)),)))
    assert not any(line.startswith("No changes") for line in lines)
    assert "\x1b" not in "".join(lines) and any("x\\nNo changes" in line for line in lines)


# -- 3. versions and aliases ----------------------------------------------------------------


def _alias_version() -> str:
    return str(
        boto3.client("lambda").get_alias(FunctionName="tiny-prod", Name="live")["FunctionVersion"]
    )


def test_publish_alias_url_and_rollback(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256\n", 'memory = 256\nalias = "live"\n'))
    # moto ignores Qualifier on URL configs and permissions: the plan's calls say it.
    planned = json.loads(cli("-C", str(project), "plan", "--json", "-t", "prod").stdout)
    calls = [c for a in planned["targets"][0]["actions"] for c in a["calls"]]
    for call in calls:
        if call["operation"] in ("create_function_url_config", "add_permission"):
            assert call["params"]["Qualifier"] == "live", call
    assert [c["operation"] for c in calls].count("add_permission") == 2
    first = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert first.exit_code == 0, first.output
    assert _alias_version() == "1"
    assert "prod.version = 1" in first.stdout and "prod.alias = live" in first.stdout
    lam = boto3.client("lambda")
    # The URL and its grants are on the alias.
    again = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert again.exit_code == 0, again.output  # published version == $LATEST: nothing

    toml.write_text(toml.read_text().replace("memory = 256", "memory = 384"))
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert "+ lambda tiny-prod version lambda.publish_version" in plan.stdout
    assert "~ alias tiny-prod:live lambda.update_alias" in plan.stdout
    assert "FunctionVersion: 1 -> (the version published above)" in plan.stdout
    second = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert second.exit_code == 0, second.output
    assert _alias_version() == "2" and "prod.version = 2" in second.stdout
    config = lam.get_function_configuration(FunctionName="tiny-prod", Qualifier="2")
    assert config["MemorySize"] == 384

    refused = cli("-C", str(project), "rollback", "-t", "prod")
    assert refused.exit_code == 1 and "--auto-approve" in refused.stderr
    assert _alias_version() == "2"
    back = cli("-C", str(project), "rollback", "-t", "prod", "--auto-approve")
    assert back.exit_code == 0, back.output
    assert "~ alias tiny-prod:live lambda.update_alias  # rollback from version 2" in back.stdout
    assert "FunctionVersion: 2 -> 1" in back.stdout
    assert _alias_version() == "1"
    none_left = cli("-C", str(project), "rollback", "-t", "prod", "--auto-approve")
    assert none_left.exit_code == 1 and "no earlier published version" in none_left.stderr


def test_removing_the_alias_removes_it_and_its_url(cli, project: Path) -> None:
    """Before, dropping `alias` from the manifest left the alias (and the URL on it)
    in place, unseen by every later plan. The alias we made is named in a tag, so the
    plan finds it. (moto ignores Qualifier on URL configs: the alias's URL is read back
    as the function's, so this end-to-end test sees the alias go; the URL's removal is
    held on plain data and under Stubber below.)"""
    toml = project / "metorial.toml"
    text = toml.read_text()
    toml.write_text(text.replace("memory = 256\n", 'memory = 256\nalias = "live"\n'))
    assert cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").exit_code == 0
    assert _fn_tags()["pmcp-build:alias"] == "live"

    toml.write_text(text)  # no alias any more
    plan = cli("-C", str(project), "plan", "-t", "prod")
    assert "- alias tiny-prod:live lambda.delete_alias  # alias no longer declared" in plan.stdout
    applied = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert applied.exit_code == 0, applied.output
    with pytest.raises(botocore.exceptions.ClientError):
        boto3.client("lambda").get_alias(FunctionName="tiny-prod", Name="live")
    assert "pmcp-build:alias" not in _fn_tags()
    again = cli("-C", str(project), "plan", "-t", "prod", "--detailed-exitcode")
    assert again.exit_code == 0, again.output


def _fn_tags() -> dict[str, str]:
    lam = boto3.client("lambda")
    return dict(lam.get_function(FunctionName="tiny-prod").get("Tags") or {})


def test_a_url_left_behind_is_removed_on_plain_data() -> None:
    """An alias added to a function that had a public URL: the unqualified URL would go
    on serving $LATEST to anyone. An alias removed: its URL and grants, then the alias."""
    from pmcp_build.deploy.targets.lambda_.model import LambdaState, Statement, Url, UrlPlace
    from pmcp_build.deploy.targets.lambda_.url import leftovers, public_grants

    from .test_deploy_units import _want

    grants = {sid: Statement(sid, "Allow", g["Action"], "*")
              for sid, g in public_grants("f").items()}  # fmt: skip
    url = Url("NONE", "https://old.lambda-url.eu-west-1.on.aws/")
    moved = leftovers(_want(alias="live"), LambdaState(elsewhere=(UrlPlace(None, url, grants),)))
    assert [(a.op, a.symbol) for a in moved] == [
        ("lambda.delete_function_url_config", "-"),
        ("lambda.remove_permission", "-"),
        ("lambda.remove_permission", "-"),
    ]
    assert all("Qualifier" not in c.params for a in moved for c in a.calls)
    assert {a.reason for a in moved} == {"the url is served by alias live now"}

    dropped = leftovers(
        _want(),
        LambdaState(elsewhere=(UrlPlace("live", url, grants),), stale_alias="live"),
    )
    assert [a.op for a in dropped] == [
        "lambda.delete_function_url_config",
        "lambda.remove_permission",
        "lambda.remove_permission",
        "lambda.delete_alias",  # last: its URL and grants go first
    ]
    assert all(c.params.get("Qualifier") == "live" for a in dropped[:3] for c in a.calls)
    assert dropped[-1].calls[0].params == {"FunctionName": "f", "Name": "live"}
    assert leftovers(_want(alias="live"), LambdaState()) == []


def test_urls_left_behind_are_read_with_their_qualifier() -> None:
    """Stubber, as moto ignores Qualifier: each read names where it looks."""
    from botocore.stub import Stubber

    from pmcp_build.deploy.targets.lambda_.read import _read_elsewhere
    from pmcp_build.deploy.targets.lambda_.url import PUBLIC_URL_SID

    lam = boto3.client("lambda", region_name="eu-west-1")
    statement = {"Sid": PUBLIC_URL_SID, "Effect": "Allow", "Principal": "*"}
    policy = json.dumps({"Statement": [{**statement, "Action": "lambda:InvokeFunctionUrl"}]})
    fn_arn = "arn:aws:lambda:eu-west-1:123456789012:function:f"
    old = {"FunctionUrl": "https://old.lambda-url.eu-west-1.on.aws/", "FunctionArn": fn_arn,
           "AuthType": "NONE", "CreationTime": "t", "LastModifiedTime": "t"}  # fmt: skip
    with Stubber(lam) as stub:
        # An alias now declared: the unqualified URL is looked up, and found.
        stub.add_response("get_function_url_config", old, {"FunctionName": "f"})
        stub.add_response("get_policy", {"Policy": policy}, {"FunctionName": "f"})
        found, stale = _read_elsewhere(lam, "f", "live", {}, "https://new.on.aws/")
        assert stale is None and found[0].qualifier is None
        assert found[0].url.auth == "NONE" and PUBLIC_URL_SID in found[0].grants

        # The alias we made (its tag) is no longer declared: it, and its URL, are read.
        alias = {"AliasArn": f"{fn_arn}:live", "Name": "live", "FunctionVersion": "3"}
        stub.add_response("get_alias", alias, {"FunctionName": "f", "Name": "live"})
        where = {"FunctionName": "f", "Qualifier": "live"}
        stub.add_response("get_function_url_config", old, where)
        stub.add_response("get_policy", {"Policy": policy}, where)
        found, stale = _read_elsewhere(lam, "f", None, {"pmcp-build:alias": "live"}, None)
        assert stale == "live" and found[0].qualifier == "live"

        # The declared URL read back at another qualifier is the same config: not left over.
        stub.add_response("get_function_url_config", old, {"FunctionName": "f"})
        assert _read_elsewhere(lam, "f", "live", {}, old["FunctionUrl"]) == ((), None)
        stub.assert_no_pending_responses()
    # A target that never had an alias reads nothing more.
    assert _read_elsewhere(object(), "f", None, {}, None) == ((), None)


def test_rollback_needs_an_alias(cli, project: Path) -> None:
    result = cli("-C", str(project), "rollback", "-t", "prod", "--auto-approve")
    assert result.exit_code == 1 and 'alias = "live"' in result.stderr


def test_publish_diff_on_plain_data() -> None:
    from dataclasses import replace

    from pmcp_build.deploy.targets.lambda_.versions import diff, rollback_action

    from .test_deploy_units import _deployed, _want

    state = _deployed(CodeSha256="c")
    fn = state.function
    assert fn is not None
    same = replace(fn, version="4")
    state = replace(state, published=same, alias_version="4")
    live = _want(alias="live", code_sha256="c")
    assert diff(live, state, False) == []
    moved = diff(live, state, True)
    assert [a.op for a in moved] == ["lambda.publish_version", "lambda.update_alias"]
    assert moved[0].calls[0].params["CodeSha256"] == "c"  # the guard
    assert moved[1].calls[0].params["FunctionVersion"] == {"$output": "version"}
    # killed before publishing: nothing changed, but $LATEST differs from version 4
    older = replace(same, config=replace(same.config, memory=256))
    stale = replace(state, published=older)
    assert [a.op for a in diff(_want(publish=True), stale, False)] == ["lambda.publish_version"]
    action = rollback_action("f", "live", "7", ["$LATEST", "2", "5", "7", "9"])
    assert action.calls[0].params["FunctionVersion"] == "5"


# -- 4. outputs (item 7) ----------------------------------------------------------------------


def test_outputs_every_apply_text_and_json(cli, project: Path) -> None:
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace("memory = 256\n", 'memory = 256\nalias = "live"\n'))
    first = json.loads(
        cli("-C", str(project), "apply", "--auto-approve", "-t", "prod", "--json").stdout
    )
    arn = _fn()["FunctionArn"]
    url = boto3.client("lambda").get_function_url_config(
        FunctionName="tiny-prod", Qualifier="live"
    )["FunctionUrl"]
    wanted = {
        "function_arn": arn,
        "version": "1",
        "alias": "live",
        "alias_arn": f"{arn}:live",
        "url": url,
        "url_auth": "NONE (public)",
    }
    assert first["outputs"]["prod"] == wanted
    again = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")  # nothing to do
    assert again.exit_code == 0, again.output
    tail = again.stdout[again.stdout.index("Outputs:") :]
    assert tail.splitlines()[1:] == [f"  prod.{k} = {v}" for k, v in wanted.items()]
    as_json = json.loads(
        cli("-C", str(project), "apply", "--auto-approve", "-t", "prod", "--json").stdout
    )
    assert as_json["changes"] is False and as_json["outputs"]["prod"] == wanted

    # No alias, no URL: $LATEST is what runs, and there is no URL to print.
    toml.write_text(
        toml.read_text().replace('alias = "live"\n', "").replace('url = { auth = "NONE" }\n', "")
    )
    plain = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod", "--json")
    outputs = json.loads(plain.stdout)["outputs"]["prod"]
    assert outputs["version"] == "$LATEST" and outputs["alias"] is None
    assert outputs["url"] is None and outputs["function_arn"] == arn
    text = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod").stdout
    assert "prod.version = $LATEST" in text and "prod.url" not in text


# -- 5. the profile asked for (item 9) --------------------------------------------------------


@pytest.mark.parametrize("where", ["env", "manifest"])
def test_missing_profile_is_named(
    cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    if where == "env":
        # a run without a profile first: its cached clients must not serve "nosuch"
        assert cli("-C", str(project), "plan", "-t", "prod").exit_code == 0
        monkeypatch.setenv("AWS_PROFILE", "nosuch")
    else:
        toml = project / "metorial.toml"
        toml.write_text(
            toml.read_text().replace("memory = 256\n", 'memory = 256\nprofile = "nosuch"\n')
        )
    for args in (
        ["plan", "-t", "prod"],
        ["apply", "--auto-approve", "-t", "prod"],
        ["logs", "-t", "prod"],
    ):
        result = cli("-C", str(project), *args)
        assert result.exit_code == 1, (args, result.output)
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert error == ["error: AWS profile 'nosuch' not found; check ~/.aws/config"], (
            args,
            result.stderr,
        )


# -- 6. the README's CI recipe (item 10) ------------------------------------------------------


def _ci_lines(job: dict, command: str) -> list[str]:
    runs = [step.get("run", "") for step in job["steps"]]
    lines = [line.strip() for run in runs for line in run.splitlines()]
    return [line for line in lines if line.startswith(command)]


def test_readme_ci_recipe_plans_and_applies_the_saved_plan(
    cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline the README shows, run as written (its commands, against moto). It
    failed once: its plan file lay in the source, so the apply job's build packaged it
    and the saved plan no longer matched the package."""
    import os
    import shlex

    import yaml

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("\n## In CI\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    workflow = yaml.safe_load(block)
    plan_job, apply_job = workflow["jobs"]["plan"], workflow["jobs"]["apply"]
    assert apply_job["needs"] == "plan" and "push" in apply_job["if"]
    (plan_line,) = _ci_lines(plan_job, "pmcp-build plan")
    (apply_line,) = _ci_lines(apply_job, "pmcp-build apply")
    case = "\n".join(step.get("run", "") for step in plan_job["steps"])
    assert '2) echo "changes=true"' in case and '0) echo "changes=false"' in case
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path / "runner"))
    (tmp_path / "runner").mkdir()

    def args(line: str) -> list[str]:
        return [os.path.expandvars(a) for a in shlex.split(line.split(">")[0])[1:]]

    planned = cli("-C", str(project), *args(plan_line))
    assert planned.exit_code == 2, planned.output  # changes
    assert (tmp_path / "runner" / "plan.bin").is_file()
    applied = cli("-C", str(project), *args(apply_line))
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["outputs"]["prod"]["function_arn"] == _fn()["FunctionArn"]
    assert cli("-C", str(project), *args(plan_line)).exit_code == 0  # no changes
    typo = cli("-C", str(project), *args(plan_line.replace("--out", "--ot")))
    assert typo.exit_code == 64  # a typo in the pipeline is never "changes"


def test_a_plan_file_the_build_would_package_is_refused(cli, project: Path) -> None:
    inside = cli("-C", str(project), "plan", "-t", "prod", "--out", "plan.bin")
    assert inside.exit_code == 1, inside.output
    assert "--out plan.bin: the file is inside the source" in inside.stderr
    assert [line for line in inside.stderr.splitlines() if line.startswith("error:")] == [
        "error: --out plan.bin: the file is inside the source, so the next build would "
        "package it and apply would refuse the plan; write it under .pmcp/ "
        "(--out .pmcp/plan.bin) or outside the source"
    ]
    assert not (project / "plan.bin").exists()
    kept = cli("-C", str(project), "plan", "-t", "prod", "--out", ".pmcp/plan.bin")
    assert kept.exit_code == 0, kept.output
    applied = cli("-C", str(project), "apply", ".pmcp/plan.bin")
    assert applied.exit_code == 0, applied.output
