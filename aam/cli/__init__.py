"""The ``aam`` command-line interface: a click group with one module per command."""

from __future__ import annotations

import importlib
import logging
import shlex
import sys

import click

from aam import __version__
from aam.errors import AamError
from aam.training.preemption import RunInterrupted

# command name -> module under aam.cli that defines ``command``
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "unifrac": "unifrac",
    "pretrain": "pretrain",
    "train": "train",
    "predict": "predict",
    "embed": "embed",
    "explain": "explain",
    "inspect": "inspect",
    "rf-baseline": "rf_baseline",
    "cross-validate": "cross_validate",
}

log = logging.getLogger("aam")


class AamGroup(click.Group):
    """Loads subcommands lazily (fast ``--help``) and turns ``AamError`` into one line and exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name = f"aam.cli.{COMMANDS[name]}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return _not_built_yet(name)
        return module.command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AamError as err:
            click.echo(f"aam: error: {err.one_line()}", err=True)
            ctx.exit(2)
        except RunInterrupted as stop:
            click.echo(f"aam: {stop.one_line(resume_command(sys.argv))}", err=True)
            ctx.exit(stop.exit_code)


def resume_command(argv: list[str]) -> str:
    """The command line that was run (as ``aam ...``), without any ``--resume-from`` it had."""
    args: list[str] = []
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume-from":
            skip = True
        elif not arg.startswith("--resume-from="):
            args.append(arg)
    return shlex.join(["aam", *args])


def _not_built_yet(name: str) -> click.Command:
    """A placeholder for a command that is specified but not implemented in this version."""

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   add_help_option=False)
    def placeholder() -> None:
        raise AamError(f"'aam {name}' is not available in this version of aam yet")

    placeholder.short_help = "(not available yet)"
    return placeholder


@click.group(cls=AamGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aam")
def cli() -> None:
    """Attention All Microbes: transformers that read ASV sequences to predict sample metadata."""


def main() -> None:
    cli(prog_name="aam")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
