"""The README and docs/ tell the truth: the settings table, the commands they teach, the
README's size and links, and the example inventory it shows."""

import re
import runpy
from pathlib import Path

import pytest

from celery_fleet import layout
from celery_fleet.fleetplan import HostInput, plan_fleet, roles_of
from celery_fleet.settings import SETTINGS, resolve, settings_table_markdown, update_readme
from celery_fleet.sizing import Gpu, HostFacts

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
SETTINGS_DOC = ROOT / "docs" / "SETTINGS.md"
TABLE = re.compile(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", re.S)
README_MAX_BYTES = 15_000  # 15 KB as `wc -c README.md` counts it: depth goes to docs/


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_settings_table_is_the_one_generated_from_the_defaults():
    table = TABLE.search(SETTINGS_DOC.read_text())
    assert table, "docs/SETTINGS.md lost its settings table markers"
    assert table.group(1).strip() == settings_table_markdown(), (
        "docs/SETTINGS.md settings table is stale: run python -m celery_fleet.settings")


def test_python_m_celery_fleet_settings_rewrites_a_stale_table(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "PROJECT_DIR", tmp_path)  # update_readme()'s default: docs/
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "SETTINGS.md"
    text = SETTINGS_DOC.read_text()
    stale = TABLE.sub("<!-- settings-table:start -->\n| old |\n<!-- settings-table:end -->", text)
    doc.write_text(stale)
    update_readme()
    assert doc.read_text() == TABLE.sub(lambda m: m.group(0).replace(
        m.group(1), settings_table_markdown()), text)
    doc.write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(doc)


def make_targets(text: str) -> list[str]:
    return [a or b for a, b in re.findall(r"`make (\w[\w-]*)`|^make (\w[\w-]*)", text, re.M)]


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_the_make_targets_a_page_teaches_exist(page):
    makefile = (ROOT / "Makefile").read_text()
    for target in make_targets(page.read_text()):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
            f"make {target} is in {name(page)} only")


def test_the_readme_teaches_the_two_lab_commands():
    assert {"demo", "test"} <= set(make_targets(README))


def test_ci_runs_the_readme_test_command():
    command = re.compile(r"\bmake test\b(?!-)")
    assert command.search(README) and command.search((ROOT / ".ci" / "run").read_text())


def test_the_readme_stays_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move depth to docs/")


def test_the_readme_links_every_docs_page():
    assert DOCS, "docs/ has no pages"
    for page in DOCS:
        assert f"](docs/{page.name})" in README, f"README.md does not link docs/{page.name}"


def without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", without_code(page.read_text()), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_of_a_page_resolves(page):
    for link in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{name(page)} links {link}: no such file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{name(page)} links {link}: no such heading"


def python_block(text: str, first_line: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"expected one python block starting with {first_line!r}"
    return found[0]


def test_the_readme_inventory_is_a_valid_fleet(tmp_path):
    path = tmp_path / "yours.py"
    path.write_text(python_block(README, "# inventory/yours.py\n"))
    namespace = runpy.run_path(str(path))
    # what pyinfra takes for groups: every module-level list or tuple not named _...
    groups = {key: value for key, value in namespace.items()
              if not key.startswith("_") and isinstance(value, (list, tuple))}
    assert set(groups) == set(layout.GROUP_ROLES), "the four groups, and nothing else"
    data: dict[str, dict] = {}
    member: dict[str, list[str]] = {}
    for group, hosts in groups.items():
        for host in hosts:
            assert isinstance(host, tuple) and isinstance(host[1], dict), host
            data.setdefault(host[0], {}).update(host[1])  # as pyinfra merges host data
            member.setdefault(host[0], []).append(group)
    for host, values in data.items():
        assert values["ssh_user"] and values["_sudo"] is True, host
    assert any(key in SETTINGS and key.endswith("_concurrency")
               for values in data.values() for key in values), "a per-host override"
    planned, errors = plan_fleet([
        HostInput(host, roles_of(member[host]), values, values.get("ssh_hostname") or host,
                  # the GPU host serves its model with vLLM; the model's file size is read
                  HostFacts(16384, 8, (Gpu(0, 24576),) if "llm_model_host_path" in values
                            else (), llm_model_mb=1000)) for host, values in data.items()])
    assert errors == []
    assert {role for p in planned.values() for role in p.roles} == set(
        layout.GROUP_ROLES.values())


def test_the_readme_own_app_settings_are_settings_it_accepts():
    block = python_block(README, '    "worker_app_source"')
    values = eval("{" + block + "}")  # the lines the README says to add to a dict
    assert {"worker_app_source", "worker_app_module", "embedding_queues", "llm_queues",
            "worker_requirements"} <= set(values)
    resolved = resolve("example", values)
    assert resolved["worker_requirements"] == list(layout.WORKER_BASE_REQUIREMENTS)
