"""Grade a response's final answer against a reference with ``math-verify`` (imported lazily).

``math-verify`` (Hugging Face) extracts the final answer of a response (``\\boxed{...}``,
"the answer is ...", the last LaTeX or plain expression) and compares it with the reference
symbolically and numerically (``\\frac{1}{2}`` equals ``0.5``, ``1,000`` equals ``1000``).
Its timeouts use ``signal.alarm``, so grading runs in the main thread of each process.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: The verdicts, in summary order. "no_answer": nothing could be extracted; it counts as wrong.
GRADES = ("correct", "wrong", "no_answer")
#: What :func:`grade_pair` returns for a reference math-verify cannot parse (not a verdict: no reward).
UNLABELLED = "unlabelled"

INSTALL_HINT = (
    "`rift-losses label` grades answers with math-verify: pip install 'rift-losses[data]' (or pip install math-verify)"
)


def _math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return math_verify


#: A reference that carries its own math delimiters: an unescaped ``$``, ``\\(``, ``\\[`` or ``\\boxed``.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
#: A reference written in LaTeX (a command, a brace group): ``\\frac{1}{2}``, ``\\$18``, ``50\\%``.
_LATEX = re.compile(r"[\\{}]")


@lru_cache(maxsize=4096)
def parse_reference(answer: str) -> tuple:
    """The parsed reference answer; ``ValueError`` if math-verify extracts nothing from it.

    As math-verify's README prescribes for gold answers whose format is known: LaTeX goes
    through ``LatexExtractionConfig`` inside a math environment, a plain expression through
    ``ExprExtractionConfig``. So a reference with its own delimiters (``$...$``, ``\\boxed{}``,
    ``\\(...\\)``) is read as written; a bare one that looks like LaTeX (``\\frac{1}{2}``,
    ``\\$18``, ``50\\%``, ``5\\text{ cm}``) is wrapped in ``$...$`` and read as LaTeX first;
    any other (``72``, ``3/4``, ``1,000``, ``50%``, ``18 dollars``) is read as a plain
    expression first. The other reading is tried when the first extracts nothing.
    """
    mv = _math_verify()
    text = answer.strip()
    latex = (f"${text}$", [mv.LatexExtractionConfig()])
    expr = (text, [mv.ExprExtractionConfig()])
    tries = [latex, expr] if _LATEX.search(text) else [expr, latex]
    if _DELIMITED.search(text):
        tries.insert(0, (text, [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]))
    for candidate, config in tries:
        parsed = mv.parse(candidate, extraction_config=config, fallback_mode="no_fallback")
        if parsed:
            return tuple(parsed)
    raise ValueError("math-verify extracts no math answer from it")


def grade(answer: str, response: str) -> str:
    """``"correct"``, ``"wrong"`` or ``"no_answer"`` for one response (see :data:`GRADES`).

    Raises ``ValueError`` when the *reference* cannot be parsed (bad input, never a verdict).
    """
    mv = _math_verify()
    gold = parse_reference(answer)
    extracted = mv.parse(response, fallback_mode="no_fallback")
    if not extracted:
        return "no_answer"
    return "correct" if mv.verify(list(gold), extracted) else "wrong"


def grade_pair(pair: tuple[str, str]) -> tuple[str, str | None]:
    """For worker processes: ``(verdict, None)``, or ``(UNLABELLED, message)`` for a reference that cannot be parsed."""
    try:
        return grade(*pair), None
    except ValueError as exc:
        return UNLABELLED, str(exc)
