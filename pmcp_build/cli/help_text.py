"""`--help` that names what each option takes: a flag shows no type, a value its name
(`--port PORT`, not `<int>`), and every option has a line of help.

Typer labels a parameter by its Python type (`<bool>`, `<list[str]>`, `<str>`), which
says little to someone at a shell. The labels are set once per run, on the click
command tree, before click renders help or parses anything.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

# Options some commands declare without a help line; the text says what they are.
FALLBACK_HELP = {
    "target": "The target to use, by the name the manifest gives it (targets.NAME).",
    "auto_approve": "Go ahead without asking (needed when not at a terminal).",
    "plan_file": "A plan saved by `plan --out`, applied exactly; without one, plan first.",
}


def tidy(command: Any) -> None:
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            # Its name column already says what it is (ZIP, [PLANFILE]): no `<path>`.
            param.display_type_rich = lambda ctx: None
            if not param.help and param.name in FALLBACK_HELP:
                param.help = FALLBACK_HELP[param.name]
            continue
        if not getattr(param, "opts", None) or param.param_type_name != "option":
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""  # a flag takes nothing
        elif param.metavar is None and param.name:
            param.metavar = param.name.upper()
        if not param.help and param.name in FALLBACK_HELP:
            param.help = FALLBACK_HELP[param.name]
    _flag_help_option(command)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


def _flag_help_option(command: Any) -> None:
    """`--help` is made when help is asked for, not kept in `params`: label it then."""
    original = command.get_help_option
    if getattr(original, "tidied", False):
        return

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            option.metavar = ""
        return option

    get_help_option.tidied = True  # type: ignore[attr-defined]
    command.get_help_option = get_help_option


class TidyGroup(TyperGroup):
    """The app's top-level group: its help, and every subcommand's, with real metavars."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        tidy(self)
        return super().main(*args, **kwargs)
