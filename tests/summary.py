"""One closing line for ``make test``: the JUnit reports of the suites that ran side by side, added up.

``python tests/summary.py OUT SUITE...``: for each suite, ``OUT/SUITE.xml`` (a pytest suite) or
``OUT/SUITE.ok`` (a run that is not pytest, such as the reproduction smoke run) must exist. Prints
one line per suite and the totals; exits 1 when a suite left no report, or any test failed or
errored, or no test ran at all.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(xml: Path) -> dict[str, int]:
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    got = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
    got["time"] = sum(float(s.get("time", 0)) for s in suites)
    return got


def main(argv: list[str]) -> int:
    out, suites = Path(argv[0]), argv[1:]
    total = {"passed": 0, "failed": 0, "skipped": 0}
    bad = []
    for suite in suites:
        xml, ok = out / f"{suite}.xml", out / f"{suite}.ok"
        if xml.exists():
            c = counts(xml)
            failed = c["failures"] + c["errors"]
            passed = c["tests"] - failed - c["skipped"]
            total["passed"] += passed
            total["failed"] += failed
            total["skipped"] += c["skipped"]
            print(f"{suite}: {passed} passed, {failed} failed, {c['skipped']} skipped in {c['time']:.0f} s")
            if failed:
                bad.append(suite)
        elif ok.exists():
            print(f"{suite}: done")
        else:
            print(f"{suite}: FAILED (no report in {out})")
            bad.append(suite)
    print(f"total: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    if bad:
        print(f"make test: failed suites: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad or total["passed"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
