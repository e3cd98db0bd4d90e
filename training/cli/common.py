"""What every command shares: the consoles, the settings, and one clear line per error.

Exit codes: 0 success; 1 unexpected failure; 2 bad input (data, arguments, configuration);
3 a model backend failed or was unreachable; 4 a router could not be loaded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from router.errors import CascadeRouterError, ConfigurationError
from router.settings import RouterSettings

#: progress, logs and errors go to stderr; results (tables, JSON) to stdout
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn package errors into one clear line and a documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CascadeRouterError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] in {"router", "training", "serving"}:
                raise
            console.print(
                f"[bold red]error:[/] this command needs {exc.name}, which is not installed: "
                + escape("pip install 'cascade-router[train,serve]'"),
                highlight=False,
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("CASCADE_DEBUG"):
                raise
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
                "(set CASCADE_DEBUG=1 to see the traceback)",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def load_settings() -> RouterSettings:
    """The package settings from the ``CASCADE_*`` environment."""
    return RouterSettings()


def log_line(message: str) -> None:
    """A progress line on stderr."""
    console.print(f"[cyan]›[/] {message}", highlight=False)


def step_kind(text: str) -> tuple[str, str]:
    """``STEP=KIND`` of an ``--answer-kind`` option."""
    step, sep, kind = text.partition("=")
    if not sep or not step.strip() or not kind.strip():
        raise ConfigurationError(f"--answer-kind {text!r}: use STEP=KIND, e.g. math=number")
    return step.strip(), kind.strip()


def key_env(model: str) -> str:
    """The environment variable that holds an upstream model's API key."""
    return "CASCADE_KEY_" + "".join(c if c.isalnum() else "_" for c in model).upper()
