"""MS-Swift's RIFT loss writes the logits gradient over the logits only in a training step.

The real loss class of ``--loss_type rift`` (``loss_map["rift"]``, as ``swift sft`` builds it) on
logits that a linear LM head produced; the trainer is the few attributes the loss reads. That the
switch trains exactly the same through the real ``swift sft`` is tested in test_swift_sft.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.slow


def sft_args():
    return SimpleNamespace(
        loss_type="rift",
        task_type="causal_lm",
        rlhf_type=None,
        sequence_parallel_size=1,
        enable_dft_loss=False,
        enable_channel_loss=False,
        streaming=False,
        cached_dataset=[],
        cached_val_dataset=[],
        padding_free=False,
        packing=False,
    )


@pytest.fixture
def make_loss(monkeypatch):
    from rift_losses.integrations.swift import install, loss

    install()
    for name in ("RIFT_LEVEL", "RIFT_REWARD_COLUMN", "RIFT_GROUP_COLUMN", "RIFT_INPLACE_GRAD"):
        monkeypatch.delenv(name, raising=False)

    def make(env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        model = torch.nn.Linear(8, 13, bias=False)
        trainer = SimpleNamespace(
            model=model,
            custom_metrics={"train": {}, "eval": {}},
            args=None,
            **{loss.REWARDS_ATTR: torch.tensor([1.0, -0.2])},
        )
        return loss.loss_classes()["rift"](sft_args(), trainer), trainer

    return make


def step(rift, trainer, *, grad=True):
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8)
    labels = torch.randint(0, 13, (2, 6))
    labels[:, :2] = -100
    with torch.set_grad_enabled(grad):
        logits = trainer.model(hidden)
        kept = logits.detach().clone()
        loss = rift(SimpleNamespace(logits=logits), labels, num_items_in_batch=None, trainer=trainer)
        if grad:
            loss.backward()
    return logits.detach(), kept, trainer.model.weight.grad.clone() if grad else None


def test_training_step_writes_the_gradient_over_the_logits_by_default(make_loss):
    rift, trainer = make_loss()
    logits, kept, grad_w = step(rift, trainer)
    assert not torch.equal(logits, kept)  # the buffer now holds dloss/dlogits
    rift_off, trainer_off = make_loss({"RIFT_INPLACE_GRAD": "0"})
    trainer_off.model.load_state_dict(trainer.model.state_dict())
    logits_off, kept_off, grad_w_off = step(rift_off, trainer_off)
    assert torch.equal(logits_off, kept_off)  # switched off: the logits are intact
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(grad_w, grad_w_off, rtol=1e-6, atol=1e-7)  # the weights' gradient is the same


def test_evaluation_and_no_grad_keep_the_logits(make_loss):
    rift, trainer = make_loss()
    trainer.model.eval()  # evaluation: the host reads the logits for metrics and predictions
    logits, kept, _ = step(rift, trainer, grad=True)
    assert torch.equal(logits, kept)
    trainer.model.train()
    logits, kept, _ = step(rift, trainer, grad=False)
    assert torch.equal(logits, kept)
