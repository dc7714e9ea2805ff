"""The committed option reference is current, and the README names every command."""

from __future__ import annotations

from pathlib import Path

from aam.cli import COMMANDS
from aam.cli.reference import reference

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    committed = (ROOT / "docs" / "cli_reference.md").read_text(encoding="utf-8")
    assert committed == reference(), "regenerate with: python -m aam.cli.reference > docs/cli_reference.md"


def test_readme_names_every_command_and_both_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in COMMANDS:
        assert f"aam {name}" in readme
    assert "make demo" in readme and "make test" in readme


def test_ci_runs_exactly_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
