"""The CHANGELOG and the package version move together."""

from __future__ import annotations

import re
from pathlib import Path

from mockforge_wsgi._version import __version__

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"


def test_the_latest_release_in_the_changelog_is_the_package_version() -> None:
    released = re.findall(
        r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", CHANGELOG.read_text(), re.M
    )
    assert released, "CHANGELOG.md has no '## [x.y.z] - YYYY-MM-DD' heading"
    assert released[0] == __version__


def test_the_changelog_keeps_an_unreleased_section_first() -> None:
    headings = re.findall(r"^## (.+)$", CHANGELOG.read_text(), re.M)
    assert headings[0] == "[Unreleased]"
