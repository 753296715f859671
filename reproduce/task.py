"""The verifiable task of `make reproduce`: generated multi-step arithmetic word problems.

Each problem is a short story with two or three arithmetic steps (add, subtract, multiply by a
small number), an exact integer answer, and a worked reference solution that writes every step
and ends with "The answer is N." (what `rift-losses label` extracts with math-verify). Problems
are drawn from a seeded generator, so the splits are the same on every machine:

    base      reference solutions the base model is first trained on with `swift sft`
    train     the problems whose sampled answers form the RIFT buffer (and the SFT arm's references)
    val       learning-rate selection
    eval      the held-out evaluation split (mean@k, pass@k)

The splits never share a problem (a problem is its prompt text).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = (
    "Ann",
    "Ben",
    "Cara",
    "Dan",
    "Eve",
    "Finn",
    "Gia",
    "Hal",
    "Ida",
    "Jon",
    "Kim",
    "Leo",
    "Mia",
    "Ned",
    "Ola",
    "Pat",
)
ITEMS = ("apples", "books", "coins", "pens", "cards", "shells", "stamps", "eggs", "marbles", "stickers")
SYSTEM = "You are a helpful assistant."


def _problem(rng: random.Random) -> tuple[str, str, int]:
    """(question, worked solution, answer) of one problem."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    a = rng.randint(2, 19)
    if kind == 0:  # a + b - c
        b = rng.randint(2, 19)
        c = rng.randint(1, a + b - 1)
        q = f"{name} has {a} {item}. {name} buys {b} more, then gives away {c}. How many {item} does {name} have now?"
        s = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}."
        ans = a + b - c
    elif kind == 1:  # a * b + c
        b = rng.randint(2, 5)
        c = rng.randint(1, 19)
        q = f"{name} has {b} boxes with {a} {item} in each box, and {c} loose {item}. How many {item} does {name} have?"
        s = f"{b} * {a} = {a * b}. {a * b} + {c} = {a * b + c}."
        ans = a * b + c
    elif kind == 2:  # a - b + c
        b = rng.randint(1, a - 1)
        c = rng.randint(2, 19)
        q = f"{name} had {a} {item} and lost {b}. Then {name} found {c}. How many {item} does {name} have?"
        s = f"{a} - {b} = {a - b}. {a - b} + {c} = {a - b + c}."
        ans = a - b + c
    else:  # (a + b) * c
        b = rng.randint(2, 19)
        c = rng.randint(2, 4)
        q = (
            f"{name} has {a} {item} and gets {b} more. A friend has {c} times as many. "
            f"How many {item} does the friend have?"
        )
        s = f"{a} + {b} = {a + b}. {a + b} * {c} = {(a + b) * c}."
        ans = (a + b) * c
    return q, f"{s} The answer is {ans}.", ans


def make_splits(sizes: dict[str, int], *, seed: int = 1234) -> dict[str, list[dict]]:
    """Disjoint splits of distinct problems: ``{split: [{"messages": [user, assistant], "answer": "N"}]}``.

    Each row is what `swift sft` trains on (the reference solution as the assistant's message)
    and what `swift sample` samples from (it drops the last assistant message); ``answer`` is
    the exact answer that `rift-losses join` carries to the sampled responses.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split, n in sizes.items():
        rows = []
        while len(rows) < n:
            q, sol, ans = _problem(rng)
            if q in seen:
                continue
            seen.add(q)
            rows.append(
                {
                    "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": sol}],
                    "answer": str(ans),
                }
            )
        out[split] = rows
    return out


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def build_model(path: Path, corpus: list[str], *, seed: int = 0, hidden_size: int = 96, num_layers: int = 3) -> Path:
    """A randomly initialised Qwen2ForCausalLM (about 0.4 M parameters) and its tokenizer in ``path``.

    The tokenizer is a small-vocabulary byte-level BPE trained on ``corpus`` with every digit its own
    token; the builder is the one the tests and the demo use (``rift_dev.tiny_model``).
    """
    from rift_dev.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(
        path,
        seed=seed,
        hidden_size=hidden_size,
        num_layers=num_layers,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=512,
        corpus=corpus,
        vocab_size=384,
        individual_digits=True,
    )


#: the problems the tokenizer is trained on (version 2's split sizes), fixed apart from any protocol's sizes:
#: a BPE trained on the splits in use changed the tokenizer, and so the base, whenever a protocol changed
#: its sizes (version 3's base solved 17.7% where version 2's solved 25.5%)
TOKENIZER_SPLITS = {"base": 2000, "train": 128, "val": 64, "eval": 256}


def tokenizer_corpus() -> list[str]:
    """The tokenizer's fixed training text: :func:`corpus_of` the problems of :data:`TOKENIZER_SPLITS`."""
    return corpus_of([r for rows in make_splits(TOKENIZER_SPLITS).values() for r in rows])


def corpus_of(rows: list[dict]) -> list[str]:
    """The tokenizer's training text: the system prompt, role names, and every problem and solution."""
    text = [SYSTEM, "system user assistant"]
    for row in rows:
        text.extend(m["content"] for m in row["messages"])
    return text
