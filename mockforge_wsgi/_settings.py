"""How a setting is declared: an attrs field whose metadata (kind, check, help, flag)
drives loading, the environment, flags, OpenAPI and the docs; and the one error every
bad value ends in. Built-in sections (config_declarations.py) and plugins' sections use
the same."""

from __future__ import annotations

from typing import Any

import attrs

from . import _kinds as kinds

__all__ = ["ConfigError", "Flag", "section", "setting"]


class ConfigError(ValueError):
    """Every problem found in a configuration, each as ``path: value is not allowed``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid chaos configuration:\n  " + "\n  ".join(self.problems))


@attrs.frozen
class Flag:
    """The ``mockforge serve`` option that sets a setting (as gunicorn's Settings carry
    their command-line flag). A flag for a setting inside a section turns it on too."""

    name: str  # "--chaos-latency-ms"
    metavar: str = ""  # "MS"; empty for an on/off switch
    note: str = ""  # what the flag does beyond setting the value, as a sentence

    @property
    def parameter(self) -> str:
        """The click parameter name: ``--chaos-latency-ms`` -> ``chaos_latency_ms``."""
        return self.name.lstrip("-").replace("-", "_")


def setting(
    default: Any,
    kind: kinds.Kind,
    help: str,
    check: kinds.Check | None = None,
    *,
    ramps: bool = False,
    flag: Flag | None = None,
) -> Any:
    """Declare one setting: an attrs field whose metadata drives loading, env, flags,
    OpenAPI and docs.

    ``ramps`` marks a probability or delay that a ramped scenario grows from zero;
    ``flag`` is the ``mockforge serve`` option that sets it, if any.
    """

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        problem = kind.type_problem(value) or (check.problem(value) if check else None)
        if problem:
            raise ConfigError([f"{attribute.name}: {problem}"])

    return attrs.field(
        default=default,
        validator=validate,
        metadata={"kind": kind, "check": check, "help": help, "ramps": ramps, "flag": flag},
    )


def section(cls: type[Any], help: str, *, in_rules: bool = True) -> Any:
    """Declare a nested section (``latency``, ``fault_injection``, ...); ``in_rules``:
    a conditional-chaos rule may override it."""
    return attrs.field(factory=cls, metadata={"section": cls, "help": help, "in_rules": in_rules})
