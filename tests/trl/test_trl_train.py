"""RIFT through the real ``RiftSFTTrainer`` (TRL 1.16) on the tiny local Qwen2 model, in process.

Exactness: all rewards +1 equal TRL's own ``loss_type="nll"``; mixed rewards equal a float64
reference computed from the model's logits; batch 6 = batch 2 x GA 3 step after step (loss,
loss parts, gradient norm); padding-free equals padded; the logits path equals the fused path.
"""

import math

import pytest
import torch
from trl_helpers import (
    EVAL_REWARDS,
    REWARDS,
    TRAINING_TEMPLATE,
    config,
    dataset,
    messages_rows,
    prompt_completion_rows,
    reference_step_loss,
    train_logs,
    trainer,
)

STEP_KEYS = ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens")


def _close(a, b, rel=1e-5, abs_=1e-6):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _batch_tokens(tr, rows):
    """(input_ids, labels, reward) of the prepared train rows ``rows`` (sequential sampling)."""
    ds = tr.train_dataset
    return [(ds[i]["input_ids"], ds[i]["labels"], float(ds[i]["reward"])) for i in rows]


def test_all_positive_rewards_equal_trls_own_nll(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    # TRL's own loss on the same targets: the assistant turns (RIFT never trains a prompt token).
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = TRAINING_TEMPLATE
    rows = messages_rows([1.0] * 8)
    rift = train_logs(trainer(model_dir, config(tmp_path / "rift", loss_type="rift", max_steps=3), rows))
    plain = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32"),
        args=config(tmp_path / "nll", config_class=SFTConfig, max_steps=3, assistant_only_loss=True),
        train_dataset=dataset(rows),
        processing_class=tokenizer,
    )
    nll = train_logs(plain)
    assert len(rift) == len(nll) == 3
    for a, b in zip(rift, nll):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5, (a, b)
        assert a["rift/neg_tokens"] == 0 and _close(a["rift/pos_loss"], a["loss"])


@pytest.mark.parametrize("loss_type,level", [("rift", "token"), ("rift_naive", "token"), ("rift", "sequence")])
def test_mixed_rewards_equal_the_float64_reference(model_dir, tmp_path, loss_type, level):
    tr = trainer(
        model_dir,
        config(tmp_path, loss_type=loss_type, rift_level=level, max_steps=1, per_device_train_batch_size=4),
        messages_rows(),
    )
    expected = reference_step_loss(
        tr.model,
        _batch_tokens(tr, range(4)),
        loss=loss_type.replace("rift_", "") if loss_type != "rift" else "rift",
        level=level,
    )
    (log,) = train_logs(tr)
    assert abs(log["loss"] - expected) <= 1e-5 * max(1.0, abs(expected)), (log["loss"], expected)
    assert _close(log["rift/pos_loss"] + log["rift/neg_loss"], log["loss"], rel=1e-5)
    assert log["rift/neg_tokens"] > 0 and 0 < log["rift/neg_prob"] < 1


@pytest.mark.parametrize("kind", ["prompt_completion", "conversational_prompt_completion", "assistant_only"])
def test_completion_and_assistant_only_masks_are_trained_with_rewards(model_dir, tmp_path, kind):
    if kind == "assistant_only":
        rows, extra, template = messages_rows(), {"assistant_only_loss": True}, TRAINING_TEMPLATE
    else:
        rows = prompt_completion_rows(conversational=kind.startswith("conversational"))
        extra, template = {"completion_only_loss": True}, None
    args = config(tmp_path, loss_type="rift", max_steps=1, per_device_train_batch_size=4, **extra)
    tr = trainer(model_dir, args, rows, chat_template=template)
    tokens = _batch_tokens(tr, range(4))
    for input_ids, labels, _ in tokens:  # the prompt is masked out, the response is not
        assert labels[0] == -100 and any(y != -100 for y in labels) and len(labels) == len(input_ids)
    expected = reference_step_loss(tr.model, tokens)
    (log,) = train_logs(tr)
    assert abs(log["loss"] - expected) <= 1e-5 * max(1.0, abs(expected))


def test_gradient_accumulation_equals_one_large_batch(model_dir, tmp_path):
    rows = messages_rows(REWARDS)
    big = train_logs(trainer(model_dir, config(tmp_path / "b6", loss_type="rift", per_device_train_batch_size=6), rows))
    acc = train_logs(
        trainer(
            model_dir,
            config(tmp_path / "b2", loss_type="rift", per_device_train_batch_size=2, gradient_accumulation_steps=3),
            rows,
        )
    )
    assert len(big) == len(acc) == 2
    for a, b in zip(big, acc):
        for key in STEP_KEYS:
            assert _close(a[key], b[key]), (key, a[key], b[key])


def test_sequence_level_gradient_accumulation_equals_one_large_batch(model_dir, tmp_path):
    rows = messages_rows(REWARDS)
    kw = {"loss_type": "rift", "rift_level": "sequence", "max_steps": 1}
    big = train_logs(trainer(model_dir, config(tmp_path / "b6", per_device_train_batch_size=6, **kw), rows))
    acc = train_logs(
        trainer(
            model_dir, config(tmp_path / "b2", per_device_train_batch_size=2, gradient_accumulation_steps=3, **kw), rows
        )
    )
    for key in ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss"):
        assert _close(big[0][key], acc[0][key]), key


def test_padding_free_rewards_follow_their_tokens(model_dir, tmp_path):
    rows = messages_rows(REWARDS)
    padded = train_logs(
        trainer(model_dir, config(tmp_path / "pad", loss_type="rift", per_device_train_batch_size=4), rows)
    )
    tr = trainer(
        model_dir, config(tmp_path / "free", loss_type="rift", per_device_train_batch_size=4, padding_free=True), rows
    )
    batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    n0 = len(tr.train_dataset[0]["input_ids"])
    assert batch["rift_rewards"].shape == batch["labels"].shape
    assert batch["rift_rewards"][0, :n0].tolist() == pytest.approx([REWARDS[0]] * n0)
    assert batch["rift_rewards"][0, n0:].tolist() == pytest.approx([REWARDS[1]] * (batch["labels"].shape[1] - n0))
    free = train_logs(tr)
    for a, b in zip(padded, free):
        for key in STEP_KEYS:
            assert _close(a[key], b[key], rel=1e-4), (key, a[key], b[key])


@pytest.mark.parametrize("inplace", [True, False])
def test_logits_path_equals_the_fused_path(model_dir, tmp_path, inplace):
    rows = messages_rows(REWARDS)
    fused = train_logs(trainer(model_dir, config(tmp_path / "fused", loss_type="rift"), rows))
    tr = trainer(
        model_dir,
        config(tmp_path / "logits", loss_type="rift", rift_inplace_grad=inplace, rift_fused_head=False),
        rows,
    )
    del tr.model.forward  # drop TRL's fused LM head and turn off rift-losses': the loss must come from the logits
    calls = []
    import rift_losses.integrations._core.loss as module  # the adapter core computes every host's loss

    original = module.token_logprobs
    module.token_logprobs = lambda *a, **k: calls.append(k["inplace_grad"]) or original(*a, **k)
    try:
        logits = train_logs(tr)
    finally:
        module.token_logprobs = original
    assert calls and set(calls) == {inplace}
    for a, b in zip(fused, logits):
        for key in STEP_KEYS:
            assert _close(a[key], b[key], rel=1e-4), (key, a[key], b[key])


def test_rift_losses_fused_head_is_the_default_and_equals_trls(model_dir, tmp_path):
    """Training steps run rift-losses' chunked head by default (no logits; leaner than TRL's tile):
    the same losses, parts and gradient norms as TRL's fused head (rift_fused_head="trl")."""
    rows = messages_rows(REWARDS)
    trl_fused = train_logs(
        trainer(model_dir, config(tmp_path / "trl_fused", loss_type="rift", rift_fused_head="trl"), rows)
    )
    assert all("mean_token_accuracy" in h for h in trl_fused)  # TRL's head ran (it reports top-1 hits)
    tr = trainer(model_dir, config(tmp_path / "rift_fused", loss_type="rift"), rows)
    import rift_losses.integrations._core.fused as module

    calls = []
    original = module.fused_token_logprobs
    module.fused_token_logprobs = lambda *a, **k: calls.append(a[0].shape) or original(*a, **k)
    try:
        ours = train_logs(tr)
    finally:
        module.fused_token_logprobs = original
    assert len(calls) == len(ours) == len(trl_fused) > 0  # one fused head call per training step
    for a, b in zip(trl_fused, ours):
        for key in STEP_KEYS:
            assert _close(a[key], b[key], rel=1e-4), (key, a[key], b[key])


def test_eval_loss_is_the_rift_loss_on_the_eval_rewards(model_dir, tmp_path):
    eval_rows = messages_rows(EVAL_REWARDS, marker="E", groups=False)
    tr = trainer(
        model_dir, config(tmp_path, loss_type="rift", per_device_eval_batch_size=4), messages_rows(), eval_rows
    )
    metrics = tr.evaluate()
    ds = tr.eval_dataset
    expected = reference_step_loss(
        tr.model, [(ds[i]["input_ids"], ds[i]["labels"], float(ds[i]["reward"])) for i in range(4)]
    )
    assert abs(metrics["eval_loss"] - expected) <= 1e-5 * max(1.0, abs(expected))
    assert _close(metrics["eval_rift/pos_loss"] + metrics["eval_rift/neg_loss"], metrics["eval_loss"])
    assert metrics["eval_rift/neg_tokens"] > 0


def test_normalized_losses_normalize_over_whole_dataset_groups(model_dir, tmp_path):
    from rift_losses import normalize_rewards

    tr = trainer(model_dir, config(tmp_path, loss_type="rift_gaussian", max_steps=1), messages_rows())
    expected = normalize_rewards(
        torch.tensor(REWARDS, dtype=torch.float64), [i // 3 for i in range(len(REWARDS))], method="gaussian"
    )
    assert torch.allclose(torch.tensor(tr.train_dataset["reward"], dtype=torch.float64), expected, atol=1e-12)
    # Without a group column the prompt groups rows: every prompt here is different, so each row is its own group.
    rows = [{k: v for k, v in r.items() if k != "group"} for r in messages_rows()]
    tr = trainer(model_dir, config(tmp_path / "p", loss_type="rift_gaussian", max_steps=1), rows)
    alone = normalize_rewards(torch.tensor(REWARDS, dtype=torch.float64), list(range(len(REWARDS))), method="gaussian")
    assert torch.allclose(torch.tensor(tr.train_dataset["reward"], dtype=torch.float64), alone, atol=1e-12)


def test_nll_and_dft_stay_trls_own(model_dir, tmp_path):
    for loss_type in ("nll", "dft"):
        with pytest.warns(UserWarning, match="ignores rewards"):
            tr = trainer(model_dir, config(tmp_path / loss_type, loss_type=loss_type, max_steps=1), messages_rows())
        (log,) = train_logs(tr)
        assert not any(k.startswith("rift/") for k in log)
