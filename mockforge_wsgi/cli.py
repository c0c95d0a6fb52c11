"""The ``mockforge`` command."""

from __future__ import annotations

import sys

import click

from .config import ConfigError, load_config


@click.group()
@click.version_option(package_name="mockforge-wsgi")
def main() -> None:
    """Chaos engineering for synchronous Python web stacks."""


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--with-env/--no-env",
    default=True,
    show_default=True,
    help="Also check MOCKFORGE_CHAOS_* variables, as a server would read them.",
)
def validate(file: str, with_env: bool) -> None:
    """Check a YAML config FILE; print every problem, exit 1 if there are any."""
    try:
        config = load_config(file, environ=None if with_env else {})
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    state = "enabled" if config.enabled else "disabled"
    click.echo(f"{file}: valid (chaos {state})")
