"""The configuration reference table, generated from the setting declarations.

python -m mockforge_wsgi.config_docs --write docs/configuration.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from .config import iter_settings

BEGIN = "<!-- BEGIN GENERATED: settings (python -m mockforge_wsgi.config_docs --write) -->"
END = "<!-- END GENERATED: settings -->"


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value) or "(empty)"
    return str(value)


def reference_table() -> str:
    """One markdown row per setting: YAML path, env var, type, default, allowed, meaning."""
    lines = [
        "| Setting | Environment variable | Type | Default | Allowed | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for info in iter_settings():
        check = info.check.describe() if info.check else ""
        lines.append(
            f"| `{info.dotted}` | `{info.env_name}` | {info.kind.label} "
            f"| `{_default(info.field.default)}` | {check} | {info.field.metadata['help']} |"
        )
    return "\n".join(lines)


def render_into(document: str) -> str:
    """``document`` with the text between the markers replaced by the current table."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(document):
        raise ValueError("the generated-section markers are missing")
    return pattern.sub(lambda _: f"{BEGIN}\n{reference_table()}\n{END}", document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="FILE", help="update the table inside FILE")
    args = parser.parse_args(argv)
    if args.write is None:
        print(reference_table())
        return 0
    path = Path(args.write)
    path.write_text(render_into(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
