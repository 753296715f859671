"""The measured tables of the docs, generated from the result files in docs/data/.

A table sits in README.md or a page under docs/ between two markers::

    <!-- table: NAME -->
    ...generated Markdown...
    <!-- /table -->

and ``TABLES[NAME]`` says which result file it is drawn from and how. A figure is changed in its
result file (the JSON a benchmark or ``make reproduce`` wrote, with the machine and the date),
never in the page::

    python docs/tables.py --write   # rewrite every table from its file
    python docs/tables.py --check   # exit 1 with a diff when a table and its file disagree

``make lint`` runs ``--check``; tests/docs checks it too. Standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- table: ([\w-]+) -->\n(.*?)<!-- /table -->", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold tables (and whose links are checked)."""
    return [p for p in (root / "README.md", root / "CONTRIBUTING.md") if p.exists()] + sorted(root.glob("docs/*.md"))


def _report(root: Path):
    """``reproduce/report.py``: the tables of ``make reproduce`` are the ones it writes to results.md."""
    spec = importlib.util.spec_from_file_location("_rift_reproduce_report", root / "reproduce" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reproduce_online(data: dict, root: Path) -> str:
    """``reproduce/online.py``'s own report of its results.json, then where the figures come from."""
    spec = importlib.util.spec_from_file_location("_rift_reproduce_online", root / "reproduce" / "online.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return (
        module.report(data)
        + f"\nMeasured {data['measured']}: {data['machine']}; {data['seconds']:.0f} s wall for the whole run.\n"
    )


def _reproduce(data: dict, root: Path) -> str:
    return _report(root).markdown(data)


def _reproduce_headline(data: dict, root: Path) -> str:
    k = data["k"]
    labels = _report(root).LABELS
    lines = [f"| method (LR chosen on validation) | mean@{k} % | pass@{k} % |", "| --- | --- | --- |"]
    for name, m in data["methods"].items():
        cells = [f"{100 * m[key]:.1f} ± {100 * m[key + '_sd']:.1f}" for key in ("mean_at_k", "pass_at_k")]
        lines.append(f"| {labels.get(name, name)} | {cells[0]} | {cells[1]} |")
    seeds = len(data["methods"]["base"]["per_seed"])
    lines.append("")
    lines.append(
        f"Mean ± sample standard deviation over {seeds} seeds; measured {data.get('measured', '(date not recorded)')}, "
        f"{data['machine']}."
    )
    return "\n".join(lines) + "\n"


def _host_memory(data: dict, root: Path) -> str:
    lines = [
        "| host | baseline GB | plain SFT above baseline GB | RIFT above GB | RIFT / plain | "
        "RIFT, gradient not in place, above GB | / plain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        host = f"{r['host']} ({r['note']})" if r.get("note") else r["host"]
        lines.append(
            f"| {host} | {r['baseline_gb']:.2f} | {r['plain_above_gb']:.2f} | {r['rift_above_gb']:.2f} | "
            f"**{r['rift_over_plain']:.2f}** | {r['rift_not_in_place_above_gb']:.2f} | "
            f"{r['not_in_place_over_plain']:.2f} |"
        )
    lines += ["", f"Measured {data['measured']}: {data['machine']}; {data['shape']}."]
    return "\n".join(lines) + "\n"


def _trl_memory(data: dict, root: Path) -> str:
    lines = ["| case | peak RSS GB | step rise GB | / TRL nll |", "| --- | --- | --- | --- |"]
    for r in data["rows"]:
        lines.append(f"| {r['case']} | {r['peak_rss_gb']:.2f} | {r['step_rise_gb']:.2f} | {r['over_trl_nll']:.2f} |")
    lines += ["", f"Measured {data['measured']}: {data['machine']}; {data['shape']}."]
    return "\n".join(lines) + "\n"


def _rows(data: dict, root: Path) -> str:
    """A plain table: ``columns``, ``rows`` (numbers or text), ``formats`` per column (None for text),
    ``bold_cells`` ([row, column] pairs), then where the figures come from."""
    bold = {tuple(cell) for cell in data.get("bold_cells", [])}
    lines = ["| " + " | ".join(data["columns"]) + " |", "| " + " | ".join("---" for _ in data["columns"]) + " |"]
    for i, row in enumerate(data["rows"]):
        out = []
        for j, (value, fmt) in enumerate(zip(row, data["formats"])):
            text = fmt.format(value) if fmt and not isinstance(value, str) else str(value)
            out.append(f"**{text}**" if (i, j) in bold else text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", f"Measured {data['measured']}: {data['machine']}."]
    return "\n".join(lines) + "\n"


#: Table name -> (result file under docs/data/, renderer(data, root) -> Markdown). One source of truth.
TABLES: dict[str, tuple[str, Callable[[dict, Path], str]]] = {
    "reproduce": ("reproduce.json", _reproduce),
    "reproduce-headline": ("reproduce.json", _reproduce_headline),
    "reproduce-online": ("reproduce_online.json", _reproduce_online),
    "host-memory": ("host_memory.json", _host_memory),
    "trl-memory": ("trl_memory.json", _trl_memory),
    "fused-host-memory": ("fused_host_memory.json", _rows),
    "fused-host-memory-swift": ("fused_host_memory_swift.json", _rows),
    "trl-heads": ("trl_heads.json", _rows),
    "gpu-wheels": ("gpu_wheels.json", _rows),
    "method-memory-1024": ("method_memory_1024.json", _rows),
    "method-memory-2048": ("method_memory_2048.json", _rows),
}


def render(name: str, root: Path = ROOT) -> str:
    """The Markdown of table ``name`` from its result file."""
    if name not in TABLES:
        raise ValueError(f"table name must be one of {', '.join(TABLES)}, got {name!r}")
    file, renderer = TABLES[name]
    data = json.loads((root / "docs" / "data" / file).read_text(encoding="utf-8"))
    return renderer(data, root)


def regenerate(text: str, root: Path = ROOT) -> str:
    """``text`` with every marked table replaced by its rendering."""
    return BLOCK.sub(lambda m: f"<!-- table: {m[1]} -->\n{_body(m[1], root)}<!-- /table -->", text)


def _body(name: str, root: Path) -> str:
    """What goes between the markers: the table, with a blank line on each side (Markdown needs
    one between an HTML comment and a table)."""
    return f"\n{render(name, root)}\n"


def check(root: Path = ROOT) -> list[str]:
    """One message (with a diff) per table that differs from its file, names an unknown table, or is missing."""
    problems, seen = [], set()
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        rel = page.relative_to(root)
        for m in BLOCK.finditer(text):
            name, body = m[1], m[2]
            seen.add(name)
            if name not in TABLES:
                problems.append(f"{rel}: table name must be one of {', '.join(TABLES)}, got {name!r}")
                continue
            want = _body(name, root)
            if body != want:
                source = f"docs/data/{TABLES[name][0]}"
                diff = "".join(
                    difflib.unified_diff(body.splitlines(True), want.splitlines(True), f"{rel} (table {name})", source)
                )
                problems.append(f"{rel}: table {name!r} differs from docs/data/{TABLES[name][0]}:\n{diff}")
    for name in TABLES.keys() - seen:
        problems.append(f"table {name!r} (docs/data/{TABLES[name][0]}) is in no page: add its markers or drop it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite every marked table from its result file")
    mode.add_argument("--check", action="store_true", help="exit 1 when a table differs from its result file")
    args = parser.parse_args(argv)
    if args.write:
        for page in pages():
            text = page.read_text(encoding="utf-8")
            new = regenerate(text)
            if new != text:
                page.write_text(new, encoding="utf-8")
                print(f"wrote {page.relative_to(ROOT)}")
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
