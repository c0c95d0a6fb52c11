"""The ``mockforge`` command."""

from __future__ import annotations

import sys

import click

from .config import ConfigError, load_config
from .scenarios import load_scenarios


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
    problems = []
    config = scenarios = None
    try:
        config = load_config(file, environ=None if with_env else {})
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        scenarios = load_scenarios(file)
    except ConfigError as error:
        problems.extend(p for p in error.problems if p not in problems)
    if problems or config is None or scenarios is None:
        click.echo(str(ConfigError(problems)), err=True)
        sys.exit(1)
    state = "enabled" if config.enabled else "disabled"
    click.echo(f"{file}: valid (chaos {state}, {len(scenarios)} custom scenarios)")
