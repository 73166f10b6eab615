"""The one exception type the CLI turns into a one-line message and exit code 1."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, missing file, refused plan.

    `str(err)` is the whole message; it should name the file, key or path and the fix.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
