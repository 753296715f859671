"""Fail on a relative link or ``#anchor`` in README.md, CONTRIBUTING.md or docs/*.md that does not resolve.

    python docs/check_links.py   # prints each broken link as FILE:LINE: ..., exit 1 if any

A link is ``[text](target)`` or ``![alt](target)`` outside code (fenced blocks and inline code
spans are skipped). ``http(s):``, ``mailto:`` and other scheme links are not fetched. A relative
target must name an existing file or folder, relative to the page; its ``#anchor`` (or a bare
``#anchor`` in the same page) must be the slug of a heading in the target Markdown file, by
GitHub's rules (``slug``). ``make lint`` runs it. Standard library only.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages(root: Path = ROOT) -> list[Path]:
    return [p for p in (root / "README.md", root / "CONTRIBUTING.md") if p.exists()] + sorted(root.glob("docs/*.md"))


def _prose_lines(text: str):
    """(line number, line) of each line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m[1][0] * len(m[1])
        elif fence is not None and m and m[1].startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped (code spans keep their text,
    links their text), lower case, every character that is not a letter, digit, space, ``-`` or
    ``_`` removed, each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated slugs get ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def check(root: Path = ROOT) -> list[str]:
    """One ``FILE:LINE: message`` per link that does not resolve."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for page in pages(root):
        rel = page.relative_to(root)
        for number, line in _prose_lines(page.read_text(encoding="utf-8")):
            for m in LINK.finditer(INLINE_CODE.sub("", line)):
                target = m[1]
                if not target or SCHEME.match(target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (page.parent / file_part).resolve() if file_part else page
                if not dest.exists():
                    problems.append(f"{rel}:{number}: link target must exist, got {target!r}")
                    continue
                if anchor:
                    if dest.suffix != ".md" or dest.is_dir():
                        problems.append(f"{rel}:{number}: an #anchor must point into a Markdown file, got {target!r}")
                        continue
                    if dest not in cache:
                        cache[dest] = anchors(dest)
                    if anchor not in cache[dest]:
                        problems.append(
                            f"{rel}:{number}: anchor must be a heading of {os.path.relpath(dest, root)}, got {target!r}"
                        )
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
