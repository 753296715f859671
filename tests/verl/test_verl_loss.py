"""RIFT as a verl 0.9 policy loss: found by verl's own registry after a plain ``import verl``.

The losses are compared, values and gradients, with a float64 reference written as plain loops
(verl's five ``loss_agg_mode`` definitions restated from its docs, the paper's term by an ``if``
on the sign of the advantage); the advantage estimators with ``statistics``.
"""

import json
import math
import statistics
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the verl.plugins entry points: the registration under test)
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def test_a_plain_import_verl_registers_rift_through_the_entry_point():
    """A fresh interpreter: nothing of rift-losses is imported by hand, verl's plugin loader does it."""
    code = (
        "import json, sys, verl\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, ADV_ESTIMATOR_REGISTRY\n"
        "print(json.dumps({'loaded': 'rift_losses.integrations.verl' in sys.modules,\n"
        "  'losses': sorted(k for k in POLICY_LOSS_REGISTRY if k.startswith('rift')),\n"
        "  'estimators': sorted(k for k in ADV_ESTIMATOR_REGISTRY if k.startswith('rift'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {
        "loaded": True,
        "losses": ["rift", "rift_naive"],
        "estimators": ["rift", "rift_gaussian", "rift_gpg_mean", "rift_gpg_scaled"],
    }


def _batch(seed=0, b=5, t=7):
    g = torch.Generator().manual_seed(seed)
    log_prob = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 3).float()
    lengths = [7, 3, 5, 0, 6][:b]  # ragged responses, one fully masked row
    mask = torch.tensor([[k < n for k in range(t)] for n in lengths])
    per_seq = torch.tensor([1.0, -0.2, 0.7, 0.5, -1.3][:b])  # mixed signs
    advantages = per_seq[:, None] * mask
    advantages[2, 1] = 0.0  # a zero advantage on one token
    return log_prob, advantages, mask


def _terms64(loss, log_prob, advantages, mask, weights=None):
    rows = []
    for i in range(log_prob.shape[0]):
        row = []
        for k in range(log_prob.shape[1]):
            if not mask[i, k]:
                row.append(None)
                continue
            a, lp = float(advantages[i, k]), float(log_prob[i, k])
            if weights is not None:
                a *= float(weights[i, k])
            row.append(-a * lp if (loss == "naive" or a > 0) else (-a * math.exp(lp) if a < 0 else 0.0))
        rows.append(row)
    return rows


def _agg64(rows, mode, *, dp_size=1, tokens=None, seqs=None, horizon=None):
    """verl's aggregation of one rank's rows, from its docstring: global counts when given."""
    kept = [[x for x in r if x is not None] for r in rows]
    nonempty = [r for r in kept if r]
    tokens = tokens if tokens is not None else sum(len(r) for r in kept)
    seqs = seqs if seqs is not None else len(nonempty)
    if mode == "token-mean":
        return sum(map(sum, kept)) / tokens * dp_size
    if mode == "token-sum":
        return sum(map(sum, kept)) * dp_size
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in nonempty) / seqs * dp_size
    loss = sum(sum(r) for r in nonempty) / seqs * dp_size
    return loss / horizon if mode == "seq-mean-token-sum-norm" else loss


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("name", ["rift", "rift_naive"])
def test_every_loss_agg_mode_equals_the_float64_reference(name, mode):
    log_prob, advantages, mask = _batch()
    fn = get_policy_loss_fn(name)
    lp = log_prob.clone().requires_grad_(True)
    loss, metrics = fn(lp.detach(), lp, advantages, mask, loss_agg_mode=mode, config=SimpleNamespace())
    loss.backward()
    core = "naive" if name == "rift_naive" else "rift"
    expected = _agg64(_terms64(core, log_prob, advantages, mask), mode, horizon=log_prob.shape[1])
    assert math.isclose(loss.item(), expected, rel_tol=1e-6, abs_tol=1e-7), (loss.item(), expected)
    # Gradient: the same reference, differentiated in float64 by autograd over a plain re-statement.
    lp64 = log_prob.double().requires_grad_(True)
    a = advantages.double()
    terms = -a * (lp64 if core == "naive" else torch.where(a > 0, lp64, lp64.exp())) * mask
    ref = _agg_torch64(terms, mask, mode)
    ref.backward()
    assert math.isclose(ref.item(), expected, rel_tol=1e-9, abs_tol=1e-12)
    assert torch.allclose(lp.grad.double(), lp64.grad, rtol=1e-5, atol=1e-7)
    assert lp.grad[~mask].abs().max() == 0
    assert math.isclose(metrics["rift/pos_loss"] + metrics["rift/neg_loss"], loss.item(), rel_tol=1e-5, abs_tol=1e-7)
    assert metrics["rift/neg_tokens"] == 3 + 6 and metrics["rift/pos_tokens"] == 7 + 4
    neg_p = [math.exp(float(log_prob[i, k])) for i in (1, 4) for k in range(7) if mask[i, k]]
    assert math.isclose(metrics["rift/neg_prob"], statistics.fmean(neg_p), rel_tol=1e-5)


def _agg_torch64(terms, mask, mode):
    per_seq = terms.sum(-1)
    has = mask.any(-1)
    if mode == "token-mean":
        return terms.sum() / mask.sum()
    if mode == "token-sum":
        return terms.sum()
    if mode == "seq-mean-token-mean":
        return (per_seq[has] / mask.sum(-1)[has]).sum() / has.sum()
    loss = per_seq[has].sum() / has.sum()
    return loss / terms.shape[1] if mode == "seq-mean-token-sum-norm" else loss


@pytest.mark.parametrize("mode", AGG_MODES)
def test_two_data_parallel_ranks_with_global_batch_info_equal_one_batch(mode):
    """Each rank's loss with verl's global_batch_info, averaged as DDP/FSDP average gradients == one rank."""
    log_prob, advantages, mask = _batch(seed=1)
    fn = get_policy_loss_fn("rift")
    whole = log_prob.clone().requires_grad_(True)
    one, _ = fn(whole.detach(), whole, advantages, mask, loss_agg_mode=mode, config=SimpleNamespace())
    one.backward()
    info = {
        "dp_size": 2,
        "batch_num_tokens": int(mask.sum()),
        "global_batch_size": int(mask.any(-1).sum()),
        "loss_scale_factor": None,
    }
    parts, grads = [], []
    for rows in (slice(0, 2), slice(2, 5)):
        lp = log_prob[rows].clone().requires_grad_(True)
        rank = SimpleNamespace(global_batch_info=info)
        loss, _ = fn(lp.detach(), lp, advantages[rows], mask[rows], loss_agg_mode=mode, config=rank)
        (loss / 2).backward()  # the data-parallel mean of the two ranks' gradients
        parts.append(loss.item() / 2)
        grads.append(lp.grad)
    assert math.isclose(sum(parts), one.item(), rel_tol=1e-6, abs_tol=1e-7)
    assert torch.allclose(torch.cat(grads), whole.grad, rtol=1e-5, atol=1e-8)


def test_rollout_correction_weights_multiply_each_term():
    log_prob, advantages, mask = _batch(seed=2)
    weights = torch.rand(log_prob.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    loss, _ = get_policy_loss_fn("rift")(
        log_prob, log_prob, advantages, mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=weights
    )
    expected = _agg64(_terms64("rift", log_prob, advantages, mask, weights), "token-mean")
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


@pytest.mark.parametrize("name", ["rift", "rift_gaussian", "rift_gpg_mean", "rift_gpg_scaled"])
def test_advantage_estimators_give_the_papers_rewards(name):
    scores = [1.0, -0.2, -0.2, 1.0, 1.0, 1.0, -0.2, -0.2, 0.4]
    uid = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"], dtype=object)
    t = 4
    token_level = torch.zeros(len(scores), t)
    lengths = [4, 2, 3, 1, 4, 2, 3, 4, 2]
    for i, (s, n) in enumerate(zip(scores, lengths)):
        token_level[i, n - 1] = s  # an outcome reward on the last response token
    mask = torch.tensor([[k < n for k in range(t)] for n in lengths]).float()
    estimator = get_adv_estimator_fn(name)
    adv, returns = estimator(token_level_rewards=token_level, response_mask=mask, index=uid, config=None)
    method = None if name == "rift" else name[len("rift_") :]
    expected = []
    for start in range(0, 9, 3):
        g = scores[start : start + 3]
        mu, sd, alpha = statistics.fmean(g), statistics.pstdev(g), sum(x > 0 for x in g) / 3
        for r in g:
            if method is None:
                expected.append(r)
            elif method == "gaussian":
                expected.append(0.0 if sd == 0 else (r - mu) / sd)
            elif method == "gpg_mean":
                expected.append(0.0 if sd == 0 else alpha * (r - mu))
            else:
                expected.append(alpha * r)
    assert torch.allclose(adv, torch.tensor(expected)[:, None] * mask, atol=1e-6)
    assert torch.equal(adv, returns)


def test_a_normalized_estimator_without_groups_is_refused():
    with pytest.raises(ValueError, match="index must give each response's group"):
        get_adv_estimator_fn("rift_gaussian")(
            token_level_rewards=torch.ones(2, 3), response_mask=torch.ones(2, 3), index=None
        )


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_verls_own_loss_call_site_trains_rift(mode):
    """verl/workers/utils/losses.py::ppo_loss (the new engine workers' call site), on the CPU.

    The model output is verl's unpadded flat log-probs of whole sequences; the call site slices the
    responses out (shifted by one) and calls the policy loss chosen by ``policy_loss.loss_mode``.
    """
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import ActorConfig, PolicyLossConfig
    from verl.workers.utils.losses import ppo_loss

    b, p, t = 3, 4, 5
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 2, 4])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    flat = (-torch.rand(int((p + lengths).sum()), generator=g, dtype=torch.float64) * 2).float().requires_grad_(True)
    advantages = torch.tensor([1.0, -0.2, 0.5])[:, None] * mask
    data = TensorDict(
        {
            "prompts": torch.randint(1, 50, (b, p), generator=g),
            "responses": torch.randint(1, 50, (b, t), generator=g),
            "attention_mask": torch.cat([torch.ones(b, p, dtype=torch.long), mask], 1),
            "response_mask": mask,
            "old_log_probs": torch.zeros(b, t),
            "advantages": advantages,
        },
        batch_size=[b],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=b)
    config = ActorConfig(
        strategy="fsdp",
        ppo_micro_batch_size_per_gpu=b,
        rollout_n=1,
        policy_loss=PolicyLossConfig(loss_mode="rift"),
        loss_agg_mode=mode,
        use_kl_loss=False,
        entropy_coeff=0.0,
    )
    loss, metrics = ppo_loss(config, {"log_probs": flat}, data)
    loss.backward()
    # Reference: response token k of row i is predicted at flat position start_i + p + k - 1.
    rows, start, used = [], 0, set()
    for i, n in enumerate(lengths.tolist()):
        row = []
        for k in range(t):
            if k < n:
                pos = start + p + k - 1
                used.add(pos)
                a, lp = float(advantages[i, k]), float(flat[pos])
                row.append(-a * lp if a > 0 else -a * math.exp(lp))
            else:
                row.append(None)
        rows.append(row)
        start += p + n
    expected = _agg64(rows, mode)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6), (loss.item(), expected)
    unused = [k for k in range(flat.shape[0]) if k not in used]
    assert flat.grad[unused].abs().max() == 0 and flat.grad[sorted(used)].abs().min() > 0
    assert {"actor/pg_loss", "rift/pos_loss", "rift/neg_loss", "rift/neg_prob"} <= set(metrics)
