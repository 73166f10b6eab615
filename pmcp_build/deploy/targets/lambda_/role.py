"""The auto role (role = "auto"): its name, its trust and logs policy (plus the VPC
grants a function in a VPC needs), and its diff, which never takes a role pmcp-build
did not make unless the target says `adopt = true`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Action, Call, Change, Symbol
from pmcp_build.deploy.targets.lambda_.model import MANAGED_TAG, DesiredFunction, LambdaState
from pmcp_build.errors import UserError

ROLE_SUFFIX = "-pmcp-exec"
ROLE_NAME_LIMIT = 64  # IAM's limit on a role name
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
# What AWSLambdaVPCAccessExecutionRole grants: the function's network interfaces.
VPC_GRANTS = {
    "Effect": "Allow",
    "Action": [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ],
    "Resource": "*",
}


def auto_role_name(function: str) -> str:
    """`<function>-pmcp-exec`, or when that passes IAM's 64 characters the function's
    name cut short plus 8 hex of its sha256: two functions never share a role (cutting
    alone gave "x"*58 and "x"*58 + "-pmcp" the same one)."""
    name = function + ROLE_SUFFIX
    if len(name) <= ROLE_NAME_LIMIT:
        return name
    digest = hashlib.sha256(function.encode()).hexdigest()[:8]
    keep = ROLE_NAME_LIMIT - len(ROLE_SUFFIX) - len(digest) - 1
    return f"{function[:keep]}-{digest}{ROLE_SUFFIX}"


def role_policy(function: str, in_vpc: bool) -> dict[str, Any]:
    policy = aws.logs_policy(function)
    if in_vpc:
        policy["Statement"].append(dict(VPC_GRANTS))
    return policy


@dataclass(frozen=True)
class RolePlan:
    """The role's ARN for the function's configuration (or a reference to the role
    this apply creates), and its actions: before the function, and after it (a policy
    narrowed only once the function left its VPC)."""

    arn: Any
    before: list[Action] = field(default_factory=list)
    after: list[Action] = field(default_factory=list)


def diff(want: DesiredFunction, state: LambdaState) -> RolePlan:
    if not want.auto_role:
        return RolePlan(want.config.role)
    name = auto_role_name(want.function)
    in_vpc = not want.settings.vpc.empty
    put_policy = Call(
        "iam",
        "put_role_policy",
        {
            "RoleName": name,
            "PolicyName": aws.LOGS_POLICY_NAME,
            "PolicyDocument": json.dumps(role_policy(want.function, in_vpc), sort_keys=True),
        },
    )
    role = state.role
    if role is None:
        return RolePlan({"$output": "role_arn"}, [_create(want, name, put_policy)])
    actions = [] if role.managed else [_adopt(want, name, role.tags or {})]
    if _canonical(role.policy) != _canonical(role_policy(want.function, in_vpc)):
        symbol: Symbol = "+" if role.policy is None else "~"
        actions.append(
            Action(
                "iam.put_role_policy",
                symbol,
                f"iam role {name} policy {aws.LOGS_POLICY_NAME}",
                "logs policy missing" if symbol == "+" else "logs policy changed",
                (),
                (put_policy,),
                {"policy": role.policy},
            )
        )
    fn = state.function
    leaving_vpc = fn is not None and not fn.settings.vpc.empty and not in_vpc
    # Leaving the VPC: the network-interface grants go only once the function is out
    # of it (Lambda detaches its interfaces as the role it runs as).
    narrowed = [a for a in actions if a.op == "iam.put_role_policy"] if leaving_vpc else []
    return RolePlan(role.arn, [a for a in actions if a not in narrowed], narrowed)


def check_owned(want: DesiredFunction, state: LambdaState) -> None:
    """A role under the auto name that pmcp-build did not make is someone else's."""
    role = state.role
    if want.auto_role and role is not None and not role.managed and not want.adopt:
        name = auto_role_name(want.function)
        raise UserError(
            f"target {want.target!r}: IAM role {name!r} exists and was not created by "
            f"pmcp-build (no {MANAGED_TAG} tag); set adopt = true in "
            f"[targets.{want.target}] to take it over, or set role to its ARN to use it as is"
        )


def _create(want: DesiredFunction, name: str, put_policy: Call) -> Action:
    create = Call(
        "iam",
        "ensure_role",
        {
            "RoleName": name,
            "AssumeRolePolicyDocument": json.dumps(TRUST_POLICY, sort_keys=True),
            "Description": f"Execution role for {want.function}, created by pmcp-build",
            "Tags": _tag_list(want.role_tags),
        },
        outputs={"role_arn": "Role.Arn"},
    )
    return Action(
        "iam.create_role",
        "+",
        f"iam role {name}",
        'role = "auto" and the role does not exist',
        (Change(f"policy {aws.LOGS_POLICY_NAME}", None, "logs of this function only"),),
        (create, put_policy),
    )


def _adopt(want: DesiredFunction, name: str, before: Mapping[str, str]) -> Action:
    tags = {k: v for k, v in want.role_tags.items() if before.get(k) != v}
    return Action(
        "iam.tag_role",
        "~",
        f"iam role {name}",
        "adopt = true: pmcp-build takes over this role, which it did not create",
        tuple(Change(f"Tags.{k}", before.get(k), v) for k, v in sorted(tags.items())),
        (Call("iam", "tag_role", {"RoleName": name, "Tags": _tag_list(tags)}),),
    )


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True)
