"""The docs' measured tables equal their result files, and their links resolve (issue 20, items 3-4).

``docs/tables.py`` and ``docs/check_links.py`` are run by ``make lint`` too; here they also run
on small copies of the tree with one figure or one link broken, to show that each check fails
when it should.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_rift_docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load("tables")
links = _load("check_links")


@pytest.fixture
def tree(tmp_path):
    """A copy of the pages, their result files and the report module the reproduce tables use."""
    # the reproduce tables are rendered by reproduce/report.py and reproduce/online.py (with the modules it imports)
    for rel in (
        "README.md",
        "CONTRIBUTING.md",
        *(f"reproduce/{m}.py" for m in ("report", "online", "run", "stats", "task")),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    for rel in ("examples", "benchmarks", "tests", "rift_dev", "integrations", "rift_losses", "envs", "demo"):
        (tmp_path / rel).mkdir(exist_ok=True)  # folders the pages link to (their contents are not read)
    return tmp_path


def test_every_table_equals_its_result_file():
    assert tables.check() == []


def test_every_result_file_names_its_machine_and_date():
    for name, (file, _) in tables.TABLES.items():
        data = json.loads((ROOT / "docs" / "data" / file).read_text())
        assert data["machine"] and data["measured"], name
        assert str(data["measured"]) in tables.render(name) or name == "reproduce", name


def test_a_changed_figure_is_caught_and_written_back(tree):
    path = tree / "docs" / "data" / "host_memory.json"
    data = json.loads(path.read_text())
    data["rows"][0]["rift_above_gb"] = 2.48  # the measured value is 2.47
    path.write_text(json.dumps(data))
    problems = tables.check(tree)
    assert len(problems) == 1, problems
    assert "docs/performance.md: table 'host-memory' differs from docs/data/host_memory.json" in problems[0]
    assert "-| MS-Swift 4.6 | 0.65 | 7.45 | 2.47 |" in problems[0]
    assert "+| MS-Swift 4.6 | 0.65 | 7.45 | 2.48 |" in problems[0]
    page = tree / "docs" / "performance.md"
    page.write_text(tables.regenerate(page.read_text(), tree))
    assert tables.check(tree) == []


def test_a_table_edited_by_hand_is_caught(tree):
    page = tree / "README.md"
    text = page.read_text()
    rift = json.loads((tree / "docs" / "data" / "reproduce.json").read_text())["methods"]["rift"]
    sd = f"{100 * rift['mean_at_k_sd']:.1f}"
    row = f"| RIFT, token level (default) | {100 * rift['mean_at_k']:.1f} ± {sd} |"
    assert row in text
    page.write_text(text.replace(row, f"| RIFT, token level (default) | 99.9 ± {sd} |"))
    (problem,) = tables.check(tree)
    assert "README.md: table 'reproduce-headline' differs from docs/data/reproduce.json" in problem


def test_unknown_and_missing_tables_are_named(tree):
    page = tree / "docs" / "trl.md"
    text = page.read_text().replace("<!-- table: trl-memory -->", "<!-- table: trl-memroy -->")
    page.write_text(text)
    problems = tables.check(tree)
    assert any("table name must be one of" in p and "'trl-memroy'" in p for p in problems), problems
    assert any("table 'trl-memory' (docs/data/trl_memory.json) is in no page" in p for p in problems), problems
    with pytest.raises(ValueError, match="table name must be one of .*, got 'nope'"):
        tables.render("nope", tree)


def test_every_relative_link_and_anchor_resolves():
    assert links.check() == []


@pytest.mark.parametrize(
    "heading, slug",
    [
        ("Does it work?", "does-it-work"),
        ("Multi-GPU and multi-node", "multi-gpu-and-multi-node"),
        ("`make gpu-check`", "make-gpu-check"),
        ("`trl sft`", "trl-sft"),
        (
            "From sampled responses to a RIFT run: the `rift-losses` command",
            "from-sampled-responses-to-a-rift-run-the-rift-losses-command",
        ),
        ("Fields, streaming, outputs and errors", "fields-streaming-outputs-and-errors"),
        ("rift_loss and [the paper](https://arxiv.org)", "rift_loss-and-the-paper"),
        ("CPU-only test scaffolding", "cpu-only-test-scaffolding"),
    ],
)
def test_slugs_follow_githubs_rules(heading, slug):
    assert links.slug(heading) == slug


def test_broken_links_are_reported_with_file_and_line(tree):
    page = tree / "docs" / "swift.md"
    page.write_text(
        page.read_text()
        + "\n## Example\n\n"  # a second "Example": its anchor is example-1
        + "[ok](#example-1) [ok](trl.md#refusals) [web](https://example.com/x.md#nope)\n"
        + "[bad file](tlr.md) [bad anchor](trl.md#refusal) [bad here](#exampel)\n"
        + "`[in code](nowhere.md)`\n```\n[in a fence](nowhere.md)\n```\n"
    )
    problems = links.check(tree)
    lines = len(page.read_text().splitlines())
    assert problems == [
        f"docs/swift.md:{lines - 4}: link target must exist, got 'tlr.md'",
        f"docs/swift.md:{lines - 4}: anchor must be a heading of docs/trl.md, got 'trl.md#refusal'",
        f"docs/swift.md:{lines - 4}: anchor must be a heading of docs/swift.md, got '#exampel'",
    ]
