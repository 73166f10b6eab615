"""The JSON Schema of metorial.toml, generated from the models (never hand-edited)."""

from __future__ import annotations

import json
from typing import Any

from pmcp_build.manifest.model import Manifest

SCHEMA_ID = "https://metorial.com/schemas/metorial.schema.json"


def manifest_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "metorial.toml",
    }


def schema_text() -> str:
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"
