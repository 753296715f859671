"""LLaMA-Factory's RIFT loss writes the logits gradient over the logits only in a training step.

The adapter's real ``compute_loss_func`` (:class:`RiftLoss`, as ``RiftSeq2SeqTrainer`` builds it
from ``rift_inplace_grad``) on logits that a linear LM head produced, with a collated batch's
rewards. That the switch trains exactly the same through the real ``llamafactory-cli train`` is
tested in test_lf_train.py.
"""

import pytest
import torch

from rift_losses.integrations.llamafactory._args import RiftFinetuningArguments
from rift_losses.integrations.llamafactory._trainer import REWARD_BITS, RiftLoss


def step(rift, *, training=True, grad=True):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 13, bias=False)
    hidden = torch.randn(2, 6, 8)
    labels = torch.randint(0, 13, (2, 6))
    labels[:, :2] = -100
    rift.take({REWARD_BITS: torch.tensor([1.0, -0.2]).view(torch.int32)}, training=training)
    with torch.set_grad_enabled(grad):
        logits = head(hidden)
        kept = logits.detach().clone()
        loss = rift({"logits": logits}, labels)
        if grad:
            loss.backward()
    return logits.detach(), kept, head.weight.grad


def test_default_writes_the_gradient_over_the_logits_in_training():
    assert RiftFinetuningArguments.__dataclass_fields__["rift_inplace_grad"].default is True
    logits, kept, grad_w = step(RiftLoss("rift", level="token"))
    assert not torch.equal(logits, kept) and torch.isfinite(logits).all()
    logits_off, kept_off, grad_w_off = step(RiftLoss("rift", level="token", inplace_grad=False))
    assert torch.equal(logits_off, kept_off)
    torch.testing.assert_close(grad_w, grad_w_off, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("training,grad", [(False, True), (True, False)], ids=["evaluation", "no_grad"])
def test_evaluation_and_no_grad_keep_the_logits(training, grad):
    logits, kept, _ = step(RiftLoss("rift", level="token"), training=training, grad=grad)
    assert torch.equal(logits, kept)
