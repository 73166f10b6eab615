"""`${env:NAME}` references: resolved at plan time, never shown, never saved in clear."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import ENV_REF, LAMBDA_ENV_LIMIT
from pmcp_build.text import MASK as MASK  # re-exported: the targets mask with it
from pmcp_build.text import masked, remember


@dataclass(frozen=True)
class Environment:
    """A target's environment with references resolved. `values` holds clear text and
    must only ever reach Lambda; everything printable goes through `shown()`."""

    values: dict[str, str] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()

    def shown(self) -> dict[str, str]:
        return {k: (MASK if k in self.secret_keys else v) for k, v in self.values.items()}

    def secrets(self) -> list[str]:
        return [v for k, v in self.values.items() if k in self.secret_keys and v]

    def scrub(self, text: str) -> str:
        return masked(text, self.secrets())


def resolve(raw: dict[str, str], where: str) -> Environment:
    values: dict[str, str] = {}
    secret: set[str] = set()
    for key, value in raw.items():

        def lookup(match: object, key: str = key) -> str:
            name = match.group(1)  # type: ignore[attr-defined]
            found = os.environ.get(name)
            if found is None:
                raise UserError(
                    f"{where}.environment.{key}: ${{env:{name}}} is not set in this shell; "
                    f"export {name}=... before planning"
                )
            return found

        resolved = ENV_REF.sub(lookup, value)
        if resolved != value or ENV_REF.search(value):
            secret.add(key)
        values[key] = resolved
    size = len(json.dumps(values, separators=(",", ":")).encode())
    if size > LAMBDA_ENV_LIMIT:
        raise UserError(
            f"{where}.environment is {size} bytes once resolved; Lambda allows "
            f"{LAMBDA_ENV_LIMIT}. Shorten the values or move them to SSM / Secrets Manager"
        )
    env = Environment(values, frozenset(secret))
    remember(env.secrets())
    return env
