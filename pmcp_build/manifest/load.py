"""Reading metorial.toml and turning what goes wrong into one actionable line.

Pydantic knows the key path of an error but not its line; tomli knows lines but not
models. `_KeyLines` bridges the two by scanning the TOML text for table headers and
keys, which is enough to point a user at the line to edit.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import tomli
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import MANIFEST_NAME, Manifest


@dataclass(frozen=True)
class LoadedManifest:
    path: Path
    manifest: Manifest

    @property
    def root(self) -> Path:
        """The folder metorial.toml lives in; relative paths start here."""
        return self.path.parent.resolve()


def load_manifest(path: Path) -> LoadedManifest:
    if not path.exists():
        raise UserError(
            f"{path}: no such file; run `pmcp-build init` to write one, or pass -f FILE"
        )
    if path.is_dir():
        path = path / MANIFEST_NAME
        if not path.exists():
            raise UserError(f"{path}: no such file; run `pmcp-build init` to write one")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    return LoadedManifest(path=path, manifest=parse_manifest(text, str(path)))


def parse_manifest(text: str, filename: str = MANIFEST_NAME) -> Manifest:
    try:
        data = tomli.loads(text)
    except RecursionError:
        raise UserError(
            f"{filename}: invalid TOML: arrays or tables are nested too deeply; a manifest "
            "needs a few levels at most"
        ) from None
    except tomli.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        msg = getattr(exc, "msg", str(exc))
        where = f"{filename}:{line}" if line else filename
        raise UserError(f"{where}: invalid TOML: {msg}") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = _KeyLines(text)
        messages = [_describe(err, filename, lines) for err in _explained(exc.errors())]
        # One line: the first problem (in file order), and how many more there are.
        first = messages[0] if messages else f"{filename}: invalid manifest"
        more = len(messages) - 1
        if more:
            first += f" (and {more} more problem{'s' if more > 1 else ''}: fix this one first)"
        raise UserError(first) from exc


# -- error rendering ---------------------------------------------------------------


def _explained(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop a "missing key" error that a near-miss unknown key already explains."""
    typos: set[tuple[str | int, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden" and err["loc"]:
            path, model, _ = _walk(err["loc"])
            close = difflib.get_close_matches(str(path[-1]), _allowed_keys(model), n=1, cutoff=0.6)
            if close:
                typos.add((*path[:-1], close[0]))
    return [e for e in errors if not (e["type"] == "missing" and _walk(e["loc"])[0] in typos)]


def _describe(err: ErrorDetails, filename: str, lines: _KeyLines) -> str:
    path, model, field = _walk(err["loc"])
    dotted = _dotted(path)
    line = lines.find((*path, "kind")) if err["type"] == "union_tag_invalid" else None
    line = line or lines.find(path)
    where = f"{filename}:{line}" if line else filename
    kind = err["type"]
    info = _field_help(model, field)
    given = err.get("input")

    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        allowed = _allowed_keys(model)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{where}: {dotted}: unknown key '{key}'; {hint}"
    if kind == "missing":
        return f"{where}: {dotted}: required key is missing{_dash(info)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        expected = ctx.get("expected_tags") or (
            "'python' or 'binary'" if path[:1] == ("runtime",) else "'lambda', 's3' or 'local'"
        )
        if kind == "union_tag_not_found":
            return f"{where}: {dotted}: 'kind' is required; one of {expected}"
        return f"{where}: {dotted}.kind: unknown kind {ctx.get('tag')!r}; one of {expected}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{where}: {dotted}: {given!r} is not allowed; one of {expected}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{where}: {dotted}: {given!r} is out of range{_dash(info)}"
    if kind == "string_pattern_mismatch":
        return f"{where}: {dotted}: {given!r} is not valid{_dash(info)}"
    if kind == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
        return f"{where}: {dotted}: {msg}" if dotted else f"{where}: {msg}"
    type_name = {
        "string_type": "a string",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "bool_type": "true or false",
        "dict_type": "a table",
        "model_type": "a table",
        "model_attributes_type": "a table",
        "list_type": "an array",
        "tuple_type": "an array",
    }.get(kind)
    if type_name:
        return f"{where}: {dotted}: expected {type_name}, got {_toml_type(given)}{_dash(info)}"
    return f"{where}: {dotted}: {err['msg']}{_dash(info)}"


def _dash(info: str | None) -> str:
    return f" (allowed: {info})" if info else ""


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_Walked = tuple[tuple[str | int, ...], type[BaseModel] | None, str | None]


def _walk(loc: tuple[str | int, ...]) -> _Walked:
    """Follow a pydantic error location through the models.

    Returns the location as the user wrote it (discriminator tags removed, aliases
    restored), the innermost model reached and the field name within it.
    """
    path: list[str | int] = []
    model: type[BaseModel] | None = Manifest
    owner: type[BaseModel] | None = Manifest
    field: str | None = None
    annotation: Any = None
    for part in loc:
        if model is not None and isinstance(part, str):
            by_alias = {(f.alias or n): n for n, f in model.model_fields.items()}
            name = by_alias.get(part, part)
            info = model.model_fields.get(name)
            path.append(info.alias if info and info.alias else part)
            field = name if info else None
            owner = model
            annotation = info.annotation if info else None
            if info is None:
                return tuple(path), model, None
            model = None
            annotation = _settle(annotation)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model, annotation = annotation, None
            continue
        # Inside a container or union.
        origin = get_origin(annotation)
        if origin in (dict,):
            path.append(part)
            annotation = _settle(get_args(annotation)[1])
        elif origin in (tuple, list):
            path.append(part)
            annotation = _settle(get_args(annotation)[0])
        elif _is_union(annotation) and isinstance(part, str):
            chosen = _union_member(annotation, part)
            if chosen is None:
                path.append(part)
                return tuple(path), owner, field
            annotation = chosen  # the tag is not part of what the user wrote
        else:
            path.append(part)
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, annotation, field = annotation, None, None
            owner = model
    return tuple(path), owner, field


def _settle(annotation: Any) -> Any:
    """Strip Annotated and Optional so containers and unions show through."""
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _settle(members[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _union_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    for member in get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            kind = member.model_fields.get("kind")
            if kind is not None and tag in get_args(kind.annotation):
                return member
    return None


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _field_help(model: type[BaseModel] | None, field: str | None) -> str | None:
    if model is None or field is None:
        return None
    info = model.model_fields.get(field)
    return info.description if info else None


class _KeyLines:
    """Line numbers of the keys and tables in a TOML text, by key path."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str | int, ...], int] = {}
        table: tuple[str | int, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                names = tuple(_split_key(header.group(2)))
                if header.group(1) == "[[":
                    index = arrays.get(names, -1) + 1
                    arrays[names] = index
                    table = (*names, index)
                else:
                    table = names
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                full = (*table, *_split_key(key.group(1)))
                self.lines.setdefault(full, number)
                # Inline tables: `url = { auth = "x" }` puts url.auth on this line too.
                for inner in re.findall(r"[{,]\s*([A-Za-z0-9_-]+)\s*=", line[key.end() :]):
                    self.lines.setdefault((*full, inner), number)

    def find(self, path: tuple[str | int, ...]) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _split_key(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]
