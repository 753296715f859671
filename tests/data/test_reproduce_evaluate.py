"""reproduce/evaluate.py on MS-Swift's real TransformersEngine and a tiny Qwen2 model built here.

It runs in the MS-Swift environment, like all of tests/data.

The shared prompt prefill must leave every sample as it was; the per-chunk seeding must give the
same rows for the same seed and other rows for another.
"""

from __future__ import annotations

import sys

import pytest

from datahelpers import REPO

sys.path.insert(0, str(REPO / "reproduce"))
import evaluate  # noqa: E402
import task  # noqa: E402


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    model = task.build_model(
        tmp_path_factory.mktemp("tiny") / "model", task.tokenizer_corpus(), hidden_size=32, num_layers=2
    )
    rows = task.make_splits({"base": 1, "train": 1, "val": 1, "eval": 6})["eval"]
    return model, rows


def _sample(model, rows, *, shared: bool, seed: int, k: int = 4, batch: int = 8) -> list[str]:
    from swift.infer_engine import TransformersEngine

    engine = TransformersEngine(str(model), max_batch_size=batch, model_type="qwen2", template_type="qwen")
    if shared:
        evaluate.share_prompt_prefill(engine.model, k=k)
    out = evaluate.sample_rows(engine, rows, k=k, temperature=0.7, top_p=0.8, max_new_tokens=12, seed=seed, batch=batch)
    return [r["messages"][-1]["content"] for r in out]


def test_shared_prefill_gives_the_same_samples(problems):
    model, rows = problems
    plain = _sample(model, rows, shared=False, seed=1)
    assert len(plain) == 4 * len(rows) and len(set(plain)) > 1
    assert _sample(model, rows, shared=True, seed=1) == plain


def test_chunks_are_seeded_by_seed_and_index(problems):
    model, rows = problems
    first = _sample(model, rows, shared=True, seed=2)
    assert _sample(model, rows, shared=True, seed=2) == first
    assert _sample(model, rows, shared=True, seed=3) != first
    # chunk 1 (rows 2-3) keeps its samples when chunk 0 asks other problems: its stream is its own
    swapped = _sample(model, [rows[4], rows[5], *rows[2:]], shared=True, seed=2)
    assert swapped[8:] == first[8:] and swapped[:8] != first[:8]


def test_shared_prefill_refuses_rows_that_are_not_grouped(problems):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(problems[0])
    evaluate.share_prompt_prefill(model, k=2)
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    with pytest.raises(RuntimeError, match="2 times in a row"):
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2)
