"""The adapters' fused LM head (integrations/_core/fused.py) on a real transformers Qwen2 model, in process.

The head's forward is swapped for one model call; the loss from its log-probs must equal the loss
from the materialized logits, values and the gradient of every parameter (tied embeddings included).
"""

from __future__ import annotations

import pytest
import torch

from rift_losses.integrations._core.fused import (
    ENV_FUSED_HEAD,
    env_enabled,
    fused_lm_head,
    fused_logprobs,
    head_refusal,
)
from rift_losses.integrations._core.loss import batch_loss

transformers = pytest.importorskip("transformers")


def tiny_qwen2(**overrides):
    config = transformers.Qwen2Config(
        vocab_size=97,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        **overrides,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).float()


def batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 97, (3, 11), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[2, 8:] = -100  # padding
    rewards = torch.tensor([1.0, -0.2, 0.5])
    return ids, labels, rewards


def step_loss(model, fused: bool, **kwargs):
    ids, labels, rewards = batch()
    model.zero_grad()
    opts = {"loss": "rift", "level": "token", "num_items_in_batch": 17, **kwargs}
    if fused:
        with fused_lm_head(model, labels, chunk_size=5) as step:
            out = model(input_ids=ids)
        logprobs, mask = fused_logprobs(step, out.logits)
        loss, stats = batch_loss(labels, rewards, logprobs=logprobs, mask=mask, **opts)
    else:
        loss, stats = batch_loss(labels, rewards, logits=model(input_ids=ids).logits, **opts)
    loss.backward()
    return loss.detach(), stats, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_fused_step_equals_the_logits_step(level):
    model = tiny_qwen2()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert head_refusal(model) is None
    loss, stats, grads = step_loss(model, True, level=level)
    ref_loss, ref_stats, ref_grads = step_loss(model, False, level=level)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(stats.neg_prob_sum, ref_stats.neg_prob_sum, atol=1e-6, rtol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    assert "forward" not in model.get_output_embeddings().__dict__  # the head is restored


def test_the_head_is_restored_when_the_step_fails():
    model = tiny_qwen2()
    ids, labels, _ = batch()
    with (
        pytest.raises(RuntimeError, match=r"hidden states \(3, 11, 16\) for labels \(3, 10\)"),
        fused_lm_head(model, labels[:, :10]),
    ):
        model(input_ids=ids)
    assert "forward" not in model.get_output_embeddings().__dict__
    assert model(input_ids=ids).logits.shape == (3, 11, 97)


def test_a_changed_head_output_fails_loudly():
    model = tiny_qwen2()
    ids, labels, _ = batch()
    with fused_lm_head(model, labels) as step:
        out = model(input_ids=ids)
    with pytest.raises(RuntimeError, match="did not come back unchanged"):
        fused_logprobs(step, out.logits * 0.5)  # what a scaling model would hand back
    with pytest.raises(RuntimeError, match="did not come back unchanged"):
        fused_logprobs(step, 30.0 * torch.tanh(out.logits / 30.0))  # a soft-capping one
    with pytest.raises(RuntimeError, match="did not come back unchanged"):
        fused_logprobs(step, out.logits.detach().mul_(2.0))  # changed in place
    assert fused_logprobs(None, out.logits) is None


def test_a_detached_alias_of_the_head_output_is_accepted():
    """DeepSpeed ZeRO-3 passes a module's outputs on as ``outputs.detach()`` inside an autograd function."""
    model = tiny_qwen2()
    ids, labels, _ = batch()
    with fused_lm_head(model, labels) as step:
        out = model(input_ids=ids)

    class Alias(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.detach()

        @staticmethod
        def backward(ctx, g):
            return g

    logprobs, mask = fused_logprobs(step, Alias.apply(out.logits))
    assert logprobs.requires_grad and logprobs.shape == (3, 10) and mask.shape == (3, 10)


def test_an_exact_copy_of_the_head_output_is_accepted_and_carries_the_gradient():
    """DDP with find_unused_parameters (TRL's default) hands the outputs on through ``_DDPSink``, a clone."""
    model = tiny_qwen2()
    ids, labels, _ = batch()
    grads = []
    for copy in (False, True):
        model.zero_grad()
        with fused_lm_head(model, labels) as step:
            out = model(input_ids=ids)
        logits = out.logits.clone() if copy else out.logits
        logprobs, mask = fused_logprobs(step, logits)
        (-(logprobs * mask).sum()).backward()
        grads.append(model.get_output_embeddings().weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)


def test_heads_that_cannot_be_fused_are_refused_with_the_reason():
    assert "final_logit_softcapping=30.0" in head_refusal(tiny_qwen2(final_logit_softcapping=30.0))
    model = tiny_qwen2()
    model.lm_head = torch.nn.Sequential(model.lm_head)  # e.g. an adapter wrapped around the head
    assert "not a plain torch.nn.Linear" in head_refusal(model)
    wrapped = torch.nn.Module()
    wrapped.module = tiny_qwen2()  # DDP / DeepSpeed wrappers are looked through
    assert head_refusal(wrapped) is None
    assert "no output embeddings" in head_refusal(torch.nn.Linear(2, 2))


def test_environment_switch():
    assert env_enabled({}) is True
    assert env_enabled({ENV_FUSED_HEAD: "0"}) is False
    with pytest.raises(ValueError, match="RIFT_FUSED_HEAD must be one of '1', '0', got 'off'"):
        env_enabled({ENV_FUSED_HEAD: "off"})
