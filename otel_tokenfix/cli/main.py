"""``otel-tokenfix`` command line. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

from importlib import import_module

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Correct agent-edited token IDs in OTel traces.")

#: subcommand modules; each defines ``register(app)``.
_COMMANDS = ("serve", "convert", "demo", "inspect")


def _register() -> None:
    for name in _COMMANDS:
        try:
            module = import_module(f"otel_tokenfix.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name == f"otel_tokenfix.cli.{name}":
                continue
            raise
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
