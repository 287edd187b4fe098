"""The README tells the truth about the settings and the commands it teaches."""

import re
from pathlib import Path

from celery_fleet.settings import settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_settings_table_is_the_one_generated_from_the_defaults():
    table = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->",
                      README, re.S)
    assert table, "README lost its settings table markers"
    assert table.group(1).strip() == settings_table_markdown(), (
        "README settings table is stale: run python -m celery_fleet.settings")


def test_the_make_targets_the_readme_teaches_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make (\w[\w-]*)`|^make (\w[\w-]*)", README, re.M):
        name = target[0] or target[1]
        assert re.search(rf"^{name}:", makefile, re.M), f"make {name} is in the README only"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make test" in (ROOT / ".ci" / "run").read_text()
