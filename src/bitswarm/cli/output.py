"""How commands report: one JSON object on stdout with --json, rich tables and progress otherwise.

Human-facing progress and messages go to stderr so stdout stays clean for pipes and --json.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
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

from bitswarm.errors import BitswarmError

JSON_HELP = "Print one JSON object on stdout instead of human output."
EXPECTED_ERRORS = (BitswarmError,)  # every error a person may see derives from it

out = Console(soft_wrap=True)
err = Console(stderr=True)


class UserError(BitswarmError):
    """A mistake in how the command was called, reported without a traceback."""


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def reporting(as_json: bool) -> Iterator[None]:
    """Turn expected failures into a one-line message (and {"error": ...} with --json), exit 1."""
    try:
        yield
    except (*EXPECTED_ERRORS, UserError) as e:
        message = str(e)
        if as_json:
            emit_json({"error": message})
        err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
        raise typer.Exit(1) from None
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
