"""A base for small immutable value classes that must import in no time."""

from __future__ import annotations

from typing import Any


class Frozen:
    """Immutable after __init__ (which sets its slots through `_init`), compared and
    hashed by the slots named in `_compared` (all of them unless a class says less).

    For the models the rebuild fast path (package/rebuild.py) builds: not dataclasses,
    because importing `dataclasses` pulls in inspect, ast and dis and each class then
    generates its methods at import, ~5 ms of a ~60 ms one-file rebuild."""

    __slots__: tuple[str, ...] = ()
    _compared: tuple[str, ...] | None = None

    def _init(self, **fields: Any) -> None:
        put = object.__setattr__
        for name, value in fields.items():
            put(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared or type(self).__slots__)

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` applied (what dataclasses.replace gives): every slot of
        the class is an argument of its __init__."""
        names = type(self).__slots__
        fields: dict[str, Any] = {name: getattr(self, name) for name in names}
        return type(self)(**{**fields, **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())
