"""Planning and applying across targets: state reads in parallel, then the executor.

The executor follows the plan's actions in order; each step is idempotent (uploads
are content-addressed, role creation tolerates "already exists", updates carry
RevisionId), so a run that died half way converges when it is run again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.plan import (
    FORMAT_VERSION,
    Action,
    LambdaState,
    LocalState,
    Plan,
    S3State,
    TargetPlan,
    artifact_key,
    diff_lambda,
    diff_local,
    diff_s3,
    function_config,
)
from pmcp_build.errors import UserError
from pmcp_build.manifest.load import LoadedManifest
from pmcp_build.manifest.model import LambdaTarget, LocalTarget, S3Target
from pmcp_build.manifest.secrets import Environment, resolve
from pmcp_build.package.build import Package

Log = Callable[[str], None]


def deployment_dir(loaded: LoadedManifest, target: str) -> Path:
    return loaded.root / ".pmcp" / "deployments" / target


def read_local_state(path: Path) -> LocalState:
    state = path / "state.json"
    if not state.exists():
        return LocalState(sha256=None)
    try:
        return LocalState(sha256=json.loads(state.read_text()).get("sha256"))
    except (OSError, json.JSONDecodeError):
        return LocalState(sha256=None)  # unreadable state: redeploy


@dataclass(frozen=True)
class Desired:
    """Everything a target's executor needs that the plan's printable form must not hold."""

    env: Environment
    state: Any


def _env(loaded: LoadedManifest, name: str) -> Environment:
    target = loaded.manifest.targets[name]
    raw = target.environment if isinstance(target, LambdaTarget) else {}
    return resolve(raw, f"targets.{name}")


def plan_target(
    loaded: LoadedManifest, package: Package, name: str, refresh: bool = True
) -> tuple[TargetPlan, Desired]:
    target = loaded.manifest.targets[name]
    server = loaded.manifest.server.name
    env = _env(loaded, name)
    if isinstance(target, LocalTarget):
        path = deployment_dir(loaded, name)
        local = read_local_state(path) if refresh else LocalState(sha256=None, known=False)
        actions = diff_local(
            path=str(path.relative_to(loaded.root)), sha256=package.sha256, state=local
        )
        return (TargetPlan(name, "local", tuple(actions), local.fingerprint()), Desired(env, local))
    if isinstance(target, S3Target):
        s3_state = (
            aws.read_s3_state(aws.clients(target), target)
            if refresh
            else S3State(None, False, known=False)
        )
        actions = diff_s3(
            bucket=target.bucket, key=target.key, sha256=package.sha256, state=s3_state
        )
        return (
            TargetPlan(name, "s3", tuple(actions), s3_state.fingerprint()),
            Desired(env, s3_state),
        )
    assert isinstance(target, LambdaTarget)
    key = artifact_key(target.prefix, server, package.sha256)
    if refresh:
        lam_state = aws.read_lambda_state(aws.clients(target), target, key)
    else:
        lam_state = LambdaState(None, None, None, None, known=False)
    role = (
        target.role
        if target.role != "auto"
        else (lam_state.role_arn or f"(new) {aws.auto_role_name(target.function)}")
    )
    desired = function_config(
        package.layout.runtime, package.layout.handler, role, target.memory, target.timeout, env
    )
    actions = diff_lambda(
        function=target.function,
        bucket=target.bucket,
        key=key,
        code_sha256=package.code_sha256,
        architecture=package.layout.architecture,
        desired=desired,
        env=env,
        url_auth=target.url.auth if target.url else None,
        auto_role=target.role == "auto",
        state=lam_state,
    )
    return (
        TargetPlan(name, "lambda", tuple(actions), lam_state.fingerprint(), env.fingerprint()),
        Desired(env, lam_state),
    )


def make_plan(
    loaded: LoadedManifest, package: Package, targets: list[str], refresh: bool = True
) -> tuple[Plan, dict[str, Desired]]:
    if not targets:
        raise UserError(f"{loaded.path}: no targets declared; add a [targets.NAME] table")
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = list(pool.map(lambda n: plan_target(loaded, package, n, refresh), targets))
    plan = Plan(
        server=loaded.manifest.server.name,
        package_sha256=package.sha256,
        package_size=package.size,
        targets=tuple(r[0] for r in results),
        refreshed=refresh,
        layout_summary={
            "runtime": package.layout.runtime,
            "handler": package.layout.handler,
            "architecture": package.layout.architecture,
            "file_count": len(package.layout.entries),
            "unzipped_size": package.layout.unzipped_size,
        },
    )
    return plan, {t.name: r[1] for t, r in zip(plan.targets, results, strict=True)}


# -- saved plans -------------------------------------------------------------------------


def save_plan(plan: Plan, path: Path, manifest: Path) -> None:
    data = plan.to_json()
    data["manifest"] = str(manifest.resolve())
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_saved(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a saved plan ({exc})") from exc
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: plan format {data.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; run plan again with this version"
        )
    return data  # type: ignore[no-any-return]


def check_saved(saved: dict[str, Any], plan: Plan, path: Path) -> None:
    """Refuse a saved plan that no longer describes what apply would do."""
    if saved["package"]["sha256"] != plan.package_sha256:
        raise UserError(
            f"{path}: the package now hashes {plan.package_sha256[:12]}, the plan "
            f"was made for {saved['package']['sha256'][:12]}; run plan again"
        )
    if not saved.get("refreshed", True):
        raise UserError(
            f"{path}: was planned with --refresh=false and cannot be applied; "
            "run plan again with remote state"
        )
    before = {t["name"]: t for t in saved["targets"]}
    for target in plan.targets:
        old = before.get(target.name)
        if old is None:
            raise UserError(f"{path}: target {target.name!r} is not in the saved plan")
        if old["fingerprint"] != target.fingerprint:
            changed = sorted(
                k for k in target.fingerprint if old["fingerprint"].get(k) != target.fingerprint[k]
            )
            raise UserError(
                f"{path}: the remote state of target {target.name!r} changed since "
                f"the plan ({', '.join(changed)}); run plan again"
            )
        if old.get("env_fingerprint", "") != target.env_fingerprint:
            raise UserError(
                f"{path}: target {target.name!r}'s environment (or a ${{env:…}} "
                "value) changed since the plan; run plan again"
            )


# -- apply --------------------------------------------------------------------------------


def apply_target(
    loaded: LoadedManifest,
    package: Package,
    plan: TargetPlan,
    desired: Desired,
    log: Log,
    progress: Any = None,
) -> list[str]:
    target = loaded.manifest.targets[plan.name]
    done: list[str] = []
    todo = [a for a in plan.actions if a.symbol != "="]
    if not todo:
        return done
    if isinstance(target, LocalTarget):
        dest = deployment_dir(loaded, plan.name)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / ".package.zip.tmp"
        shutil.copyfile(package.path, tmp)
        tmp.replace(dest / "package.zip")
        (dest / "state.json").write_text(
            json.dumps(
                {
                    "sha256": package.sha256,
                    "server": loaded.manifest.server.name,
                    "runtime": package.layout.runtime,
                    "handler": package.layout.handler,
                    "architecture": package.layout.architecture,
                },
                indent=2,
            )
            + "\n"
        )
        done.append(f"{todo[0].symbol} {todo[0].resource} written")
        return done
    assert isinstance(target, (LambdaTarget, S3Target))
    c = aws.clients(target)
    try:
        if isinstance(target, S3Target):
            aws.upload(c.s3, package.path, target.bucket, target.key, package.sha256, progress)
            return [f"{todo[0].symbol} s3://{target.bucket}/{target.key} uploaded"]
        return _apply_lambda(c, target, loaded, package, todo, desired, log, progress)
    except UserError:
        raise
    except Exception as exc:
        raise aws.user_error(exc, f"applying target {plan.name!r}") from exc


def _apply_lambda(
    c: aws.Clients,
    target: LambdaTarget,
    loaded: LoadedManifest,
    package: Package,
    todo: list[Action],
    desired: Desired,
    log: Log,
    progress: Any,
) -> list[str]:
    state: LambdaState = desired.state
    key = artifact_key(target.prefix, loaded.manifest.server.name, package.sha256)
    role = target.role if target.role != "auto" else state.role_arn
    revision = (state.function or {}).get("RevisionId")
    done: list[str] = []

    def settings() -> dict[str, Any]:
        # The same settings the plan diffed, in the shape Lambda's write calls take.
        nonlocal role
        if role is None:  # role = "auto" and the role does not exist yet
            role = aws.ensure_role(c.iam, target.function)
        config = function_config(
            package.layout.runtime,
            package.layout.handler,
            role,
            target.memory,
            target.timeout,
            desired.env,
        )
        return {
            **config,
            "FunctionName": target.function,
            "Environment": {"Variables": desired.env.values},
        }

    for action in todo:
        if action.op == "s3.put_object":
            aws.upload(c.s3, package.path, target.bucket, key, package.sha256, progress)
        elif action.op == "iam.create_role":
            role = aws.ensure_role(c.iam, target.function)
        elif action.op == "lambda.create_function":
            created = aws.create_function(
                c.lam,
                {
                    **settings(),
                    "Code": {"S3Bucket": target.bucket, "S3Key": key},
                    "Architectures": [package.layout.architecture],
                    "Description": f"{loaded.manifest.server.name} (pmcp-build {package.sha12})",
                    "Tags": {"managed-by": "pmcp-build"},
                },
            )
            revision = created.get("RevisionId")
            aws.wait(c.lam, "function_active_v2", target.function)
        elif action.op == "lambda.update_function_code":
            aws.update_code(
                c.lam, target.function, target.bucket, key, package.layout.architecture, revision
            )
            # A configuration update during a code update is a ResourceConflict; and the
            # RevisionId moves again when the update completes, so read it after the wait.
            aws.wait(c.lam, "function_updated_v2", target.function)
            revision = c.lam.get_function_configuration(FunctionName=target.function).get(
                "RevisionId", revision
            )
        elif action.op == "lambda.update_function_configuration":
            updated = aws.update_configuration(c.lam, settings(), revision)
            revision = updated.get("RevisionId")
            aws.wait(c.lam, "function_updated_v2", target.function)
        elif action.op == "lambda.create_function_url_config":
            assert target.url is not None
            url = aws.create_url(c.lam, target.function, target.url.auth)
            log(f"  function url: {url}")
        elif action.op == "lambda.update_function_url_config":
            assert target.url is not None
            c.lam.update_function_url_config(FunctionName=target.function, AuthType=target.url.auth)
        elif action.op == "lambda.delete_function_url_config":
            c.lam.delete_function_url_config(FunctionName=target.function)
        done.append(f"{action.symbol} {action.resource} {action.op}")
    return done


# -- destroy ------------------------------------------------------------------------------


def destroy_actions(loaded: LoadedManifest, name: str) -> list[Action]:
    target = loaded.manifest.targets[name]
    if isinstance(target, LocalTarget):
        path = deployment_dir(loaded, name)
        if path.exists():
            return [Action("local.remove", "-", str(path.relative_to(loaded.root)), "destroy")]
        return []
    if isinstance(target, S3Target):
        return []  # artifacts in a bucket are never deleted by destroy
    c = aws.clients(target)
    try:
        function = aws.get_function(c.lam, target.function)
        url = aws.get_function_url(c.lam, target.function) if function else None
        role = (
            aws.get_role_arn(c.iam, aws.auto_role_name(target.function))
            if target.role == "auto"
            else None
        )
    except Exception as exc:
        raise aws.user_error(exc, f"reading lambda {target.function}") from exc
    actions = []
    if url:
        actions.append(
            Action(
                "lambda.delete_function_url_config",
                "-",
                f"function url {target.function}",
                "destroy",
            )
        )
    if function:
        actions.append(
            Action("lambda.delete_function", "-", f"lambda {target.function}", "destroy")
        )
    if role:
        actions.append(
            Action(
                "iam.delete_role", "-", f"iam role {role}", 'created by pmcp-build (role = "auto")'
            )
        )
    return actions


def destroy(loaded: LoadedManifest, name: str, actions: list[Action]) -> None:
    target = loaded.manifest.targets[name]
    if isinstance(target, LocalTarget):
        shutil.rmtree(deployment_dir(loaded, name), ignore_errors=True)
        return
    assert isinstance(target, LambdaTarget)
    c = aws.clients(target)
    try:
        for action in actions:
            if action.op == "lambda.delete_function_url_config":
                c.lam.delete_function_url_config(FunctionName=target.function)
            elif action.op == "lambda.delete_function":
                c.lam.delete_function(FunctionName=target.function)
            elif action.op == "iam.delete_role":
                role = aws.auto_role_name(target.function)
                c.iam.delete_role_policy(RoleName=role, PolicyName=aws.LOGS_POLICY_NAME)
                c.iam.delete_role(RoleName=role)
    except Exception as exc:
        raise aws.user_error(exc, f"destroying target {name!r}") from exc
