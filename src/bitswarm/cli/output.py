"""How commands report: one JSON object on stdout with --json, rich tables and progress otherwise.

Human-facing progress and messages go to stderr so stdout stays clean for pipes and --json.
Usage errors (a bad option value, an unknown option) follow --json too: `JsonUsageErrors` is the
root command's class.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from typer.core import TyperGroup, TyperOption

from bitswarm.errors import BitswarmError

JSON_HELP = "Print one JSON object on stdout instead of human output."
EXPECTED_ERRORS = (BitswarmError,)  # every error a person may see derives from it

# soft_wrap: rich never inserts a line break, so a CID, an address or a command in a message stays
# on one line and copies whole (the terminal may still fold it on screen, which copy-paste undoes).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class UserError(BitswarmError):
    """A mistake in how the command was called, reported without a traceback."""


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def report_error(message: str, as_json: bool, code: int) -> typer.Exit:
    """{"error": message} on stdout with --json, and the message on stderr either way; the Exit to raise."""
    if as_json:
        emit_json({"error": message})
    err.print("[bold red]error:[/] ", markup=True, end="")
    err.print(message, highlight=False, markup=False)
    return typer.Exit(code)


@contextlib.contextmanager
def reporting(as_json: bool) -> Iterator[None]:
    """Turn expected failures into a one-line message (and {"error": ...} with --json), exit 1."""
    try:
        yield
    except (*EXPECTED_ERRORS, UserError) as e:
        raise report_error(str(e), as_json, 1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


@contextlib.contextmanager
def byte_progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextlib.contextmanager
def stages(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner whose text follows the stages of a long operation."""
    if not enabled:
        yield lambda s: None
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda s: progress.update(task, description=s)


def when(timestamp: int, now: float | None = None) -> str:
    """A unix time for a person: local date and time, and how far from now ("in 6 days 23 h")."""
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    delta = round(timestamp - now)
    if delta == 0:
        return f"{moment} (now)"
    return f"{moment} (in {duration(delta)})" if delta > 0 else f"{moment} ({duration(-delta)} ago)"


def duration(seconds: int) -> str:
    """Whole seconds as the two largest units that are not zero: "1 min 40 s", "6 days 23 h"."""
    parts = []
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}")
    return " ".join(parts[:2]) or "0 s"


def _wants_json(args: list[str]) -> bool:
    """--json anywhere among the options (not after `--`, where words are arguments)."""
    options = args[: args.index("--")] if "--" in args else args
    return any(a == "--json" or a.startswith("--json=") for a in options)


class JsonUsageErrors(TyperGroup):
    """The root command: with --json on the command line, a usage error (an out-of-range value,
    an unknown option, a missing argument) is one {"error": ...} object on stdout and exit 2,
    like every other error under --json, instead of typer's usage box on stderr.

    Parsing happens in two places: the root's own options in make_context, and every subcommand's
    inside the root's invoke (which makes their contexts), so both are wrapped.
    """

    _META_KEY = "bitswarm.json_usage_errors"

    def make_context(self, info_name, args, parent=None, **extra):
        as_json = _wants_json(list(args))
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as e:
            raise self._report(e, as_json) from None
        ctx.meta[self._META_KEY] = as_json
        return ctx

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.TyperException as e:
            raise self._report(e, ctx.meta.get(self._META_KEY, False)) from None

    @staticmethod
    def _report(e: typer.TyperException, as_json: bool) -> Exception:
        # typer prints no error for a bare group that shows its help instead (NoArgsIsHelpError).
        if not as_json or type(e).__name__ == "NoArgsIsHelpError":
            return e
        message = e.format_message().rstrip(".")
        command = getattr(getattr(e, "ctx", None), "command_path", None)
        if command:
            message = f"{command}: {message} (see `{command} --help`)"
        return report_error(message, True, e.exit_code)


def _bare_flags() -> None:
    """typer (0.29) shows a type after every option in its rich help, flags included: `--json
    <bool>` reads as if it took a value, and `--json true` is refused. Flags take none, so they
    get no placeholder, as in click's plain help."""
    typed = TyperOption.display_type_rich
    if getattr(typed, "bare_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else typed(self, ctx)

    display_type_rich.bare_flags = True
    TyperOption.display_type_rich = display_type_rich


_bare_flags()
