"""The adapter core (integrations/_core) that every host calls: loss, logged scale, sequence counter, window, patching.

No host is imported: a trainer is a namespace with the attributes transformers' Trainer reads.
Each host's own tests drive the same functions through the real CLI (tests/swift, tests/llamafactory, tests/trl).
"""

from __future__ import annotations

import types
from types import SimpleNamespace

import pytest
import torch

import rift_losses
from rift_losses.integrations._core import hook, patching
from rift_losses.integrations._core.loss import batch_loss, inplace_grad_allowed, logged_loss_scale, sequence_proxies
from rift_losses.integrations._core.stats import StatsWindow


def _batch(seed=0, B=3, T=7, V=13):
    torch.manual_seed(seed)
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[:, :3] = -100
    labels[2, :] = -100  # a sample without a target token
    return logits, labels, torch.tensor([1.0, -0.2, 0.7])


@pytest.mark.parametrize("loss", rift_losses.LOSSES)
@pytest.mark.parametrize("level", rift_losses.LEVELS)
def test_batch_loss_is_the_core_loss_on_shifted_labels(loss, level):
    logits, labels, rewards = _batch()
    got, stats = batch_loss(labels, rewards, loss=loss, level=level, num_items_in_batch=9, logits=logits)
    want = getattr(rift_losses, f"{loss}_loss")(
        logits, rift_losses.shift_labels(labels), rewards, num_items_in_batch=9, level=level
    )
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(stats.pos_loss + stats.neg_loss) == pytest.approx(float(got), rel=1e-6)


def test_batch_loss_from_fused_logprobs_equals_the_logits_path_with_per_token_rewards():
    logits, labels, _ = _batch()
    token_rewards = torch.linspace(-1, 1, labels.numel()).reshape(labels.shape)  # aligned with unshifted labels
    via_logits, _ = batch_loss(labels, token_rewards, loss="rift", level="token", logits=logits)
    targets = labels[:, 1:]  # what a fused head gives: (B, T-1) log-probs of the next token
    logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    via_logprobs, _ = batch_loss(
        labels, token_rewards, loss="rift", level="token", logprobs=logprobs, mask=targets != -100
    )
    assert float(via_logprobs) == pytest.approx(float(via_logits), rel=1e-6)
    with pytest.raises(ValueError, match="exactly one of logits or logprobs, got both"):
        batch_loss(
            labels, token_rewards, loss="rift", level="token", logits=logits, logprobs=logprobs, mask=targets != -100
        )


def test_token_weights_multiply_the_rewards():
    logits, labels, rewards = _batch()
    weights = torch.rand(labels.shape)
    got, _ = batch_loss(labels, rewards, loss="rift", level="token", logits=logits, token_weights=weights.flatten())
    shifted = rift_losses.shift_labels(labels)
    terms = rift_losses.rift_loss(logits, shifted, rewards[:, None] * weights, reduction="sum")
    assert float(got) == pytest.approx(float(terms) / int((shifted != -100).sum()), rel=1e-6)


def test_inplace_grad_only_in_a_training_step_with_grad():
    logits = torch.randn(2, 3, requires_grad=True)
    assert inplace_grad_allowed(True, training=True, logits=logits)
    assert not inplace_grad_allowed(False, training=True, logits=logits)
    assert not inplace_grad_allowed(True, training=False, logits=logits)
    assert not inplace_grad_allowed(True, training=True, logits=logits.detach())
    with torch.no_grad():
        assert not inplace_grad_allowed(True, training=True, logits=logits)


def _trainer(*, average=True, accepts=False, loss_func=None, processes=4, n_gpu=1, tp=None):
    trainer = SimpleNamespace(
        args=SimpleNamespace(average_tokens_across_devices=average, n_gpu=n_gpu),
        model_accepts_loss_kwargs=accepts,
        compute_loss_func=loss_func,
        accelerator=SimpleNamespace(num_processes=processes),
    )
    if tp is not None:
        trainer.get_tp_size = lambda: tp
    return trainer


def test_logged_loss_scale_follows_the_trainers_rule():
    # transformers' Trainer.compute_loss: average_tokens_across_devices and (model_accepts_loss_kwargs or
    # compute_loss_func) and num_items_in_batch is not None -> loss *= num_processes // tp_size (n_gpu under DP)
    assert logged_loss_scale(_trainer(accepts=True), 100) == 4.0
    assert logged_loss_scale(_trainer(loss_func=object()), 100) == 4.0  # LLaMA-Factory: a compute_loss_func
    assert logged_loss_scale(_trainer(), 100) == 1.0  # neither
    assert logged_loss_scale(_trainer(accepts=True), None) == 1.0  # evaluation: no num_items_in_batch
    assert logged_loss_scale(_trainer(accepts=True, average=False), 100) == 1.0
    assert logged_loss_scale(_trainer(accepts=True, tp=2), 100) == 2.0
    assert logged_loss_scale(_trainer(accepts=True, n_gpu=2, processes=1), 100) == 2.0
    # MS-Swift restates the rule with model_accepts_loss_kwargs alone (its compute_loss_func is always set)
    assert logged_loss_scale(_trainer(accepts=False, loss_func=object()), 100, counts_items=False) == 1.0
    assert logged_loss_scale(_trainer(), 100, counts_items=True) == 4.0  # TRL: RiftSFTTrainer's own compute_loss


def test_sequence_proxies_count_responses_in_either_counting_rule():
    labels = torch.full((3, 5), -100)
    labels[0, 3:] = 1
    labels[2, 1] = 1  # its only target is at position 1: a next-token target
    labels[1, 0] = 1  # position 0 is never a target after the shift
    proxies = sequence_proxies([{"labels": labels}, {"input_ids": labels}, {"labels": labels[:1]}])
    assert len(proxies) == 2
    counted = sum(int((p["labels"][..., 1:] != -100).sum()) for p in proxies)  # transformers 5.19 (shifted)
    unshifted = sum(int((p["labels"] != -100).sum()) for p in proxies)  # transformers 5.6
    assert counted == unshifted == 3  # rows 0 and 2, and row 0 again in the second micro-batch


def test_stats_window_divides_by_optimizer_steps_and_eval_batches():
    logits, labels, rewards = _batch()
    _, stats = batch_loss(labels, rewards, loss="rift", level="token", logits=logits)
    train = StatsWindow("train")
    for step in (10, 10, 11):  # two micro-batches at step 10, one at step 11; logged at step 12
        train.add(stats, scale=1.0, global_step=step)
    summary = train.summary(global_step=12)
    assert summary["pos_loss"] == pytest.approx(3 * float(stats.pos_loss) / 2, rel=1e-6)
    assert summary["pos_tokens"] == pytest.approx(3 * float(stats.pos_tokens) / 2)
    assert train.summary(global_step=13) == {}  # a new, empty window
    evaluation = StatsWindow("eval")
    for _ in range(4):
        evaluation.add(stats, scale=1.0)
    assert evaluation.summary()["neg_loss"] == pytest.approx(float(stats.neg_loss), rel=1e-6)
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval', got 'test'"):
        StatsWindow("test")


def test_wrap_is_idempotent_and_names_a_missing_hook_point():
    owner = types.SimpleNamespace(f=lambda x: x + 1)
    owner.__name__ = "host.module"
    calls = []

    def make(original):
        def f(x):
            calls.append(x)
            return original(x) * 10

        return f

    patching.wrap(owner, "f", make)
    patching.wrap(owner, "f", make)  # a second install leaves the first alone
    assert owner.f(1) == 20 and calls == [1]
    assert getattr(owner.f, patching.MARK, False) is True
    with pytest.raises(
        RuntimeError,
        match=r"rift-losses needs host.module.g, which torch [0-9.]+\S* does not have "
        r"\(supported: 9.9\)",
    ):
        patching.wrap(owner, "g", make, host=("torch", "9.9"))


def test_hook_errors_are_re_raised_naming_the_trigger(monkeypatch):
    fake = types.ModuleType("_rift_losses_hook")
    fake.errors = {"host.trigger": KeyError("moved")}
    monkeypatch.setitem(__import__("sys").modules, "_rift_losses_hook", fake)
    hook.raise_registration_errors(["other"], host="Host")  # nothing kept for it
    with pytest.raises(
        RuntimeError, match=r"failed to set up its Host adapter when host.trigger was imported: KeyError"
    ):
        hook.raise_registration_errors(["other", "host.trigger"], host="Host")
    hook.forget("host.trigger")
    assert hook.hook_errors() == {}
