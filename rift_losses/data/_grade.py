"""Grade a response's final answer against a reference with ``math-verify`` (imported lazily).

``math-verify`` (Hugging Face) extracts the final answer of a response (``\\boxed{...}``,
"the answer is ...", the last LaTeX or plain expression) and compares it with the reference
symbolically and numerically (``\\frac{1}{2}`` equals ``0.5``, ``1,000`` equals ``1000``).
Its timeouts use ``signal.alarm``, so grading runs in the main thread of each process.
"""

from __future__ import annotations

from functools import lru_cache

#: The verdicts, in summary order. "no_answer": nothing could be extracted; it counts as wrong.
GRADES = ("correct", "wrong", "no_answer")

INSTALL_HINT = "`rift-losses label` grades answers with math-verify: pip install 'rift-losses[data]' (or pip install math-verify)"


def _math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return math_verify


@lru_cache(maxsize=4096)
def parse_reference(answer: str) -> tuple:
    """The parsed reference answer; ``ValueError`` if math-verify extracts nothing from it.

    A bare reference (``72``, ``\\frac{1}{2}``) is read as one LaTeX math expression; one that
    carries its own delimiters (``$...$``, ``\\boxed{}``) is read as written.
    """
    mv = _math_verify()
    text = answer.strip()
    tries = [text] if ("$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text) else [f"${text}$", text]
    for candidate in tries:
        parsed = mv.parse(candidate, fallback_mode="no_fallback")
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
    """For worker processes: ``(verdict, None)`` or ``("error", message)`` on a bad reference."""
    try:
        return grade(*pair), None
    except ValueError as exc:
        return "error", str(exc)
