"""Grade a response's final answer against a reference with ``math-verify`` (imported lazily).

``math-verify`` (Hugging Face) extracts the final answer of a response (``\\boxed{...}``,
"the answer is ...", the last LaTeX or plain expression) and compares it with the reference
symbolically and numerically (``\\frac{1}{2}`` equals ``0.5``, ``1,000`` equals ``1000``).
Its timeouts use ``signal.alarm``, so grading runs in the main thread of each process.

A reference is read in one of two ways (:data:`READINGS`), and never as a part of itself:

- ``"math"``: math-verify parses the *whole* reference: ``(1, 3]`` is an interval, ``1, 2`` a
  set, ``\\frac{1}{2}`` a fraction, ``18 dollars`` the number 18 (a trailing unit word).
- ``"text"``: a reference made of words (``Monday``, ``yes``, ``\\text{Devon}``), compared as
  text with the response's final answer, case and spaces normalized.

A reference that is neither (math-verify would keep only a part of it, or would read its words
as products of symbols, and it is not plain text) is *unlabelled*: no reward at all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

#: The verdicts, in summary order. "no_answer": nothing could be extracted; it counts as wrong.
GRADES = ("correct", "wrong", "no_answer")
#: What :func:`grade_pair` returns for a reference that cannot be read (not a verdict: no reward).
UNLABELLED = "unlabelled"
#: What :func:`grade_pair` returns when math-verify ran out of time (not a verdict: no reward).
TIMEOUT = "timeout"
#: How a reference is read (see the module docstring); the summary counts rows by reading.
READINGS = ("math", "text")
#: Seconds math-verify may spend on each of its two steps of one response (extraction, comparison).
DEFAULT_TIMEOUT = 5

INSTALL_HINT = (
    "`rift-losses label` grades answers with math-verify: pip install 'rift-losses[data]' (or pip install math-verify)"
)


def require_math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeouts are reported by the command itself
    return math_verify


#: A reference that carries its own math delimiters: an unescaped ``$``, ``\\(``, ``\\[`` or ``\\boxed``.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
#: A reference written in LaTeX (a command, a brace group): ``\\frac{1}{2}``, ``\\$18``, ``50\\%``.
_LATEX = re.compile(r"[\\{}]")
#: Several values (an interval, a tuple, a list, a set): read as LaTeX, which keeps them whole.
_SEVERAL = re.compile(r"[,()\[\]]")
#: A number as written in a reference or in what math-verify matched (``1,000.5`` is one number).
_NUMBER = re.compile(r"\d+(?:,\d{3})+(?![\d])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
#: Text wrappers whose content is the answer: ``\\text{Monday}``, ``\\textbf{yes}``, ``\\mbox{odd}``.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
#: Words (of at least 3 letters) that math-verify would read as a product of symbols.
_WORD = re.compile(r"[^\W\d_]{3,}")
#: Words that are math, spelled as LaTeX for math-verify.
_MATH_WORDS = {"pi": r"\pi", "inf": r"\infty", "infty": r"\infty", "infinity": r"\infty", "oo": r"\infty"}
#: A reference made only of words: ``Monday``, ``hello world``, ``no``, ``Devon's``, ``(C)`` is not.
_WORDS_ONLY = re.compile(r"[^\W\d_]+(?:[\s'\u2019-]+[^\W\d_]+)*\.?")
#: What may follow the number math-verify read in a plain reference: ``%``, a unit word after a space; before it: ``$``.
_UNIT_LEFTOVER = re.compile(r"(?:[\s%.]*|[%.]?\s+(?:[^\W\d_]{2,}[\s%.]*)+)")
_CURRENCY = re.compile(r"\s*\$?\s*")
#: Plain text that can be compared as text: no LaTeX left, one line, not too long.
_PLAIN_TEXT = re.compile(r"[^\\{}$\n^_]{1,200}")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"(?i)(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)\s*(?:$|\n|\.(?:\s|$))")


@dataclass(frozen=True)
class Reference:
    """A reference answer as read for grading: ``reading`` in :data:`READINGS`, and its ``value``.

    ``value``: math-verify's parsed expressions (``reading == "math"``), or the normalized text.
    """

    reading: str
    value: tuple | str

    def describe(self) -> str:
        """``math (1, 3]`` style text for ``label --audit``."""
        shown = ", ".join(map(str, self.value)) if self.reading == "math" else repr(self.value)
        return f"{self.reading} {shown}"


def unwrap_text(text: str) -> str:
    """``text`` without ``$`` delimiters, ``\\boxed{}`` and text wrappers: ``$\\text{Yes}$`` -> ``Yes``."""
    text = text.strip()
    for _ in range(3):
        match = _BOXED.match(text)
        if match is not None and _closing(text, match.end()) == len(text):
            text = text[match.end() : -1].strip()
        if len(text) >= 2 and text[0] == text[-1] == "$":
            text = text.strip("$").strip()
        text = _TEXT_WRAPPER.sub(lambda m: m.group(1), text).strip()
    return text


def normalize_text(text: str) -> str:
    """A text answer as compared: unwrapped, lower case, single spaces, no final period or quotes."""
    text = unwrap_text(text).replace("\\ ", " ").replace("~", " ")
    text = " ".join(text.lower().split())
    return text.strip(" .\"'*`")


def _closing(text: str, start: int) -> int | None:
    """The index just after the ``}`` that closes the brace group opened before ``start``, or None."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return None


def _boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces matched), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    end = _closing(text, starts[-1]) if starts else None
    return None if end is None else text[starts[-1] : end - 1]


def text_answer(response: str) -> str | None:
    """A response's final answer as text: its last ``\\boxed{}``, else "the answer is X", else a one-line response."""
    boxed = _boxed_content(response)
    if boxed is not None:
        return normalize_text(boxed) or None
    found = _ANSWER_IS.findall(response)
    if found:
        return normalize_text(found[-1]) or None
    stripped = response.strip()
    if stripped and "\n" not in stripped and len(stripped) <= 100:
        return normalize_text(stripped) or None
    return None


def _numbers(text: str) -> int:
    return len(_NUMBER.findall(_TEXT_WRAPPER.sub(" ", text)))


def _whole(value, matched: str, text: str, *, plain_expr: bool) -> bool:
    """Whether math-verify's reading ``value`` (from the ``matched`` part of ``text``) is all of ``text``."""
    if _numbers(matched) < _numbers(text):  # "(1, 3]" read as 3
        return False
    if plain_expr:  # what is left beside the match may only be a unit: "18 dollars", "50%"
        at = text.find(matched)
        before, after = ("", text) if at < 0 else (text[:at], text[at + len(matched) :])
        if at < 0 or not _CURRENCY.fullmatch(before) or not _UNIT_LEFTOVER.fullmatch(after):
            return False  # "Route 66" is not 66, "2xy" not 2, "x=5" not 5
    words = _WORD.findall(_TEXT_WRAPPER.sub(" ", _LATEX_COMMAND.sub(" ", text)))
    symbols = getattr(value, "free_symbols", None)
    return not (symbols and any(w.lower() not in _MATH_WORDS for w in words))  # "18 dollars" as 18*a*d*l*...


def _math_reference(text: str) -> tuple | None:
    mv = require_math_verify()
    text = _MATH_WORDS.get(text.lower(), text)
    latex = (f"${text}$", [mv.LatexExtractionConfig()], False)
    expr = (text, [mv.ExprExtractionConfig()], True)
    tries = [latex, expr] if _LATEX.search(text) or _SEVERAL.search(text) else [expr, latex]
    if _DELIMITED.search(text):
        tries.insert(0, (text, [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()], False))
    for candidate, config, plain_expr in tries:
        parsed = mv.parse(candidate, extraction_config=config, fallback_mode="first_match")
        values = [p for p in parsed if not isinstance(p, str)]
        matched = next((p for p in parsed if isinstance(p, str)), candidate)
        if values and _whole(values[0], matched, text, plain_expr=plain_expr):
            return tuple(values)
    return None


@lru_cache(maxsize=4096)
def parse_reference(answer: str) -> Reference:
    """How the reference ``answer`` is read (:class:`Reference`); ``ValueError`` if it cannot be read whole.

    As math-verify's README prescribes for gold answers whose format is known: LaTeX goes
    through ``LatexExtractionConfig`` inside a math environment, a plain expression through
    ``ExprExtractionConfig``. A reference with its own delimiters (``$...$``, ``\\boxed{}``) is
    read as written; a bare one that looks like LaTeX or holds several values (``\\frac{1}{2}``,
    ``(1, 3]``, ``1, 2``) is wrapped in ``$...$`` and read as LaTeX first; any other (``72``,
    ``3/4``, ``1,000``, ``50%``, ``18 dollars``) as a plain expression first. A reading counts
    only if it keeps every number of the reference and reads no word as symbols; words alone
    (``Monday``, ``\\text{yes}``) are text.
    """
    text = answer.strip()
    plain = unwrap_text(text)
    words_only = _WORDS_ONLY.fullmatch(plain) is not None
    if words_only and plain.lower() not in _MATH_WORDS and any(len(w) > 1 for w in re.findall(r"[^\W\d_]+", plain)):
        return Reference("text", normalize_text(plain))
    math = _math_reference(text)
    if math is not None:
        return Reference("math", math)
    if _PLAIN_TEXT.fullmatch(plain) and re.search(r"[^\W_]", plain):
        return Reference("text", normalize_text(plain))
    raise ValueError("math-verify cannot read it whole, and it is not plain text")


class GradingTimeout(Exception):
    """math-verify ran out of time on a response (its extraction or its comparison)."""


def grade(answer: str, response: str, *, timeout: int = DEFAULT_TIMEOUT) -> str:
    """``"correct"``, ``"wrong"`` or ``"no_answer"`` for one response (see :data:`GRADES`).

    Raises ``ValueError`` when the *reference* cannot be read (bad input, never a verdict),
    :class:`GradingTimeout` when math-verify takes more than ``timeout`` seconds to extract the
    response's answer or to compare it (at most about ``2 * timeout`` seconds a response).
    """
    gold = parse_reference(answer)
    if gold.reading == "text":
        said = text_answer(response)
        return "no_answer" if said is None else "correct" if said == gold.value else "wrong"
    mv = require_math_verify()
    from math_verify.errors import TimeoutException

    try:
        extracted = mv.parse(response, fallback_mode="no_fallback", parsing_timeout=timeout, raise_on_error=True)
    except TimeoutException:
        raise GradingTimeout("extraction") from None
    except Exception:  # math-verify's own rule: an answer it cannot parse is no answer
        extracted = []
    if not extracted:
        return "no_answer"
    timed_out = False
    for target in extracted:
        try:
            if mv.verify(list(gold.value), target, timeout_seconds=timeout, raise_on_error=True):
                return "correct"
        except TimeoutException:
            timed_out = True
        except Exception:  # math-verify's own rule: a comparison that fails is not a match
            continue
    if timed_out:
        raise GradingTimeout("comparison")
    return "wrong"


def grade_pair(pair: tuple) -> tuple[str, str | None, str | None]:
    """For worker processes: ``(verdict, reading, None)``; ``(UNLABELLED, None, why)``; ``(TIMEOUT, reading, step)``.

    ``pair`` is ``(answer, response)`` or ``(answer, response, timeout)``.
    """
    answer, response, *rest = pair
    timeout = rest[0] if rest else DEFAULT_TIMEOUT
    try:
        reading = parse_reference(answer).reading
    except ValueError as exc:
        return UNLABELLED, None, str(exc)
    try:
        return grade(answer, response, timeout=timeout), reading, None
    except GradingTimeout as exc:
        return TIMEOUT, reading, str(exc)
