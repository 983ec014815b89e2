"""Plain help screens, the way Unix tools write them::

    Usage: vdir put [OPTIONS] SRC... DEST

      Copy local files into the virtual directory (like cp -r).

    Options:
      -r, --recursive     Copy directories.
      -j, --jobs N        Parallel uploads (default: 8).

Typer's own renderer changes with every release (boxes, ``<bool>``, ``{sources}``); this one
reads only the click attributes every parameter has (``opts``, ``metavar``, ``help``...), so the
screens stay the same whatever typer draws.  :func:`install` puts it on a command tree.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
import types
from typing import Any

MAX_WIDTH = 100
LEFT_MAX = 30


def install(command: Any) -> None:
    """Use the plain renderer for ``command`` and every subcommand below it."""
    command.format_help = types.MethodType(_format_help, command)
    for sub in getattr(command, "commands", {}).values():
        install(sub)


def _width() -> int:
    return max(40, min(MAX_WIDTH, shutil.get_terminal_size((80, 24)).columns))


def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def _argument_name(param: Any) -> str:
    if param.metavar:
        return str(param.metavar)
    return str(param.name).upper() + ("..." if param.nargs != 1 else "")


def usage(command: Any, ctx: Any) -> str:
    pieces = [ctx.command_path]
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    if any(_is_option(p) for p in params):
        pieces.append("[OPTIONS]")
    for p in params:
        if not _is_option(p):
            name = _argument_name(p)
            pieces.append(name if p.required or name.startswith("[") else f"[{name}]")
    if getattr(command, "commands", None):
        pieces.append("COMMAND [ARGS]...")
    return "Usage: " + " ".join(pieces)


def short_help(command: Any) -> str:
    """A command's one-line summary: its docstring's first sentence or line."""
    text = inspect.cleandoc(command.short_help or command.help or "").partition("\f")[0].strip()
    first = text.split("\n\n")[0].replace("\n", " ")
    return first


_SECONDS = ("interval", "timeout", "age", "lease", "settle", "duration", "retry_base")
_METAVARS = {"workers": "N", "count": "N", "max_attempts": "N", "jobs": "N", "backend": "NAME", "node": "ID",
             "policy_file": "FILE", "user_data": "FILE", "cache_dir": "DIR", "near": "PATH", "all_near": "PATH",
             "cache_size": "SIZE", "flavor": "TYPE", "provider": "NAME", "key": "NAME", "image": "IMAGE"}


def option_metavar(param: Any) -> str:
    """What an option's value is called: its own metavar, else one derived from its name."""
    if param.metavar:
        return str(param.metavar)
    name = str(param.name)
    if name in _METAVARS:
        return _METAVARS[name]
    if any(word in name for word in _SECONDS):
        return "SECONDS"
    return name.upper().replace("_", "-")


def _option_row(param: Any) -> tuple[str, str]:
    names = sorted([*param.opts, *param.secondary_opts], key=lambda o: (o.startswith("--"), len(o)))
    left = ", ".join(names)
    if not param.is_flag and not getattr(param, "count", False):
        left += " " + option_metavar(param)
    text = (param.help or "").strip()
    default = param.default
    if (not param.is_flag and default not in (None, "", (), []) and not callable(default)
            and getattr(param, "show_default", True) is not False):
        shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        text = text[:-1] + f" (default: {shown})." if text.endswith(".") else f"{text} (default: {shown})"
    if getattr(param, "multiple", False) and "repeatable" not in text.lower():
        text += " Repeatable."
    envvar = param.envvar if getattr(param, "show_envvar", False) or param.name == "config" else None
    if envvar:
        text += f" [env: {envvar if isinstance(envvar, str) else ', '.join(envvar)}]"
    return left, text.strip()


def _rows(title: str, rows: list[tuple[str, str]], width: int) -> list[str]:
    if not rows:
        return []
    left_w = min(LEFT_MAX, max(len(left) for left, _ in rows))
    lines = ["", f"{title}:"]
    for left, text in rows:
        indent = 2 + left_w + 2
        wrapped = textwrap.wrap(text, max(20, width - indent)) or [""]
        if len(left) > left_w:
            lines.append(f"  {left}")
            lines += [" " * indent + w for w in wrapped]
        else:
            lines.append(f"  {left:<{left_w}}  {wrapped[0]}".rstrip())
            lines += [" " * indent + w for w in wrapped[1:]]
    return lines


def render(command: Any, ctx: Any) -> str:
    width = _width()
    lines = [usage(command, ctx)]
    body = inspect.cleandoc(command.help or "").partition("\f")[0].strip()
    for para in body.split("\n\n") if body else []:
        lines.append("")
        lines += textwrap.wrap(" ".join(para.split()), width - 2, initial_indent="  ", subsequent_indent="  ")
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    lines += _rows("Arguments", [(_argument_name(p), (getattr(p, "help", None) or "").strip()) for p in params
                                 if not _is_option(p)], width)
    lines += _rows("Options", [_option_row(p) for p in params if _is_option(p)], width)
    subs = getattr(command, "commands", {}) or {}
    lines += _rows("Commands", [(name, short_help(sub)) for name, sub in subs.items()
                                if not getattr(sub, "hidden", False)], width)
    return "\n".join(lines) + "\n"


def _format_help(self: Any, ctx: Any, formatter: Any) -> None:
    formatter.write(render(self, ctx))
