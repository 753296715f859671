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


def build_tokenizer(path: Path, corpus: list[str]):
    """A small-vocabulary tokenizer: byte-level BPE (words merge) with every digit its own token.

    Qwen's chat special tokens; the chat template only matters for tools that render it
    (MS-Swift uses its own `qwen` template).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rift_losses.testing import SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = (
        "{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    fast.save_pretrained(str(path))
    return fast


def build_model(path: Path, corpus: list[str], *, seed: int = 0, hidden_size: int = 96, num_layers: int = 3) -> Path:
    """A randomly initialised Qwen2ForCausalLM (about 0.4 M parameters) and its tokenizer in ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path, corpus)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(str(path))
    return path


def corpus_of(rows: list[dict]) -> list[str]:
    """The tokenizer's training text: the system prompt, role names, and every problem and solution."""
    text = [SYSTEM, "system user assistant"]
    for row in rows:
        text.extend(m["content"] for m in row["messages"])
    return text
