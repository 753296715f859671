"""Online RIFT through the real RiftGRPOTrainer: TRL generates on the CPU, rewards, then the RIFT loss.

Every loss is checked against a float64 reference recomputed from the recorded completions with a
plain loop (the model's logits row by row, the paper's term by an ``if`` on the reward's sign).
"""

import math

import pytest
import torch
from grpo_helpers import (
    all_plus_one,
    completion_logps64,
    grpo_config,
    has_digit,
    length_parity,
    prompt_rows,
    reference_normalize,
    spy_trainer,
    term,
)

pytestmark = pytest.mark.slow


def _train_one_step(model_dir, out, reward_funcs, **overrides):
    tr = spy_trainer(model_dir, grpo_config(out, **overrides), reward_funcs, prompt_rows(2))
    tr.train()
    assert tr.seen, "the trainer never computed a loss"
    return tr


def _reference(tr, *, loss="rift", level="token", method=None, reward_funcs, weights=None):
    """Float64 loss of the one recorded micro-batch: per-function rewards recomputed from the decoded completions."""
    (inputs, _), *_ = tr.seen
    tok = tr.processing_class
    completions = [
        tok.decode(ids[m.bool()], skip_special_tokens=True)
        for ids, m in zip(inputs["completion_ids"], inputs["completion_mask"])
    ]
    weights = weights or [1.0] * len(reward_funcs)
    rewards = []
    for c in completions:
        values = [f([c])[0] for f in reward_funcs]
        scorable = [w * v for w, v in zip(weights, values) if v is not None]
        rewards.append(sum(scorable) if scorable else None)
    return completions, rewards


def _loss64(tr, rewards, *, loss="rift", level="token"):
    (inputs, _), *_ = tr.seen
    logps = completion_logps64(tr.model, inputs)
    total, count = 0.0, 0
    for r, row in zip(rewards, logps):
        if level == "token":
            total += sum(term(loss, r, lp) for lp in row)
            count += len(row)
        elif row:
            total += term(loss, r, sum(row))
            count += 1
    return total / count


def test_all_plus_one_is_the_mean_nll_of_the_sampled_completions(model_dir, tmp_path):
    tr = _train_one_step(model_dir, tmp_path, [all_plus_one], learning_rate=0.0)
    (inputs, loss), *_ = tr.seen
    assert torch.equal(inputs["rift_rewards"], torch.ones(8))
    logps = completion_logps64(tr.model, inputs)
    nll = -sum(sum(row) for row in logps) / sum(len(row) for row in logps)
    assert sum(len(row) for row in logps) > 8  # real sampled completions, several tokens each
    assert math.isclose(float(loss), nll, rel_tol=1e-5), (float(loss), nll)
    (log,) = [h for h in tr.state.log_history if "loss" in h and "train_runtime" not in h]
    assert math.isclose(log["loss"], nll, rel_tol=1e-4)
    assert log["rift/neg_loss"] == 0 and math.isclose(log["rift/pos_loss"], log["loss"], rel_tol=1e-5)


@pytest.mark.parametrize(
    ("loss_type", "level"),
    [
        ("rift", "token"),
        ("rift_naive", "sequence"),
        ("rift_gaussian", "token"),
        ("rift_gpg_mean", "token"),
        ("rift_gpg_scaled", "sequence"),
    ],
)
def test_mixed_rewards_equal_the_float64_reference(model_dir, tmp_path, loss_type, level):
    funcs, weights = [length_parity, has_digit], [1.0, 0.5]
    tr = _train_one_step(
        model_dir, tmp_path, funcs, loss_type=loss_type, rift_level=level, reward_weights=weights, learning_rate=0.0
    )
    (inputs, loss), *_ = tr.seen
    loss_name, method = tr.args.rift_loss
    _, raw = _reference(tr, reward_funcs=funcs, weights=weights)
    # TRL shuffles the generation batch: a completion's group is its prompt. Unscorable completions (every
    # function returned None) get 0 and stay out of their group's statistics.
    prompts = [tuple(ids[m.bool()].tolist()) for ids, m in zip(inputs["prompt_ids"], inputs["prompt_mask"])]
    assert sorted(prompts.count(p) for p in set(prompts)) == [4, 4]
    rewards = [0.0] * len(raw)
    for p in set(prompts):
        members = [i for i, q in enumerate(prompts) if q == p and raw[i] is not None]
        for i, value in zip(members, reference_normalize([raw[i] for i in members], len(members), method)):
            rewards[i] = value
    assert torch.allclose(inputs["rift_rewards"].double(), torch.tensor(rewards, dtype=torch.float64), atol=1e-6)
    assert any(r > 0 for r in rewards) and any(r < 0 for r in rewards), rewards
    expected = _loss64(tr, rewards, loss=loss_name, level=level)
    assert math.isclose(float(loss), expected, rel_tol=1e-5, abs_tol=1e-7), (float(loss), expected)
    (log,) = [h for h in tr.state.log_history if "loss" in h and "train_runtime" not in h]
    assert math.isclose(log["rift/pos_loss"] + log["rift/neg_loss"], log["loss"], rel_tol=1e-5, abs_tol=1e-7)
    assert log["rift/neg_tokens"] > 0 and 0 < log["rift/neg_prob"] < 1


def _weights_after_one_step(model_dir, out, **overrides):
    tr = _train_one_step(model_dir, out, [length_parity], **overrides)
    completions = sorted(
        tuple(ids[m.bool()].tolist())
        for inputs, _ in tr.seen
        for ids, m in zip(inputs["completion_ids"], inputs["completion_mask"])
    )
    return completions, {k: v.detach().clone() for k, v in tr.model.state_dict().items()}


def test_gradient_accumulation_equals_one_big_batch(model_dir, tmp_path):
    big_completions, big = _weights_after_one_step(model_dir, tmp_path / "b8")
    acc_completions, acc = _weights_after_one_step(
        model_dir, tmp_path / "b4ga2", per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    assert big_completions == acc_completions  # the same generation batch, split in two micro-batches
    moved = max((big[k] - acc[k]).abs().max().item() for k in big)
    assert moved < 1e-6, moved
    base = spy_trainer(model_dir, grpo_config(tmp_path / "base"), [length_parity], prompt_rows(2)).model.state_dict()
    assert max((big[k] - base[k]).abs().max().item() for k in big) > 1e-4  # the step did move the weights


# ---- refusals, before the model loads ---------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("beta", 0.04, "without a reference model"),
        ("num_iterations", 2, "stale samples"),
        ("epsilon", 0.3, "importance ratio"),
        ("epsilon_high", 0.28, "importance ratio"),
        ("delta", 1.5, "importance ratio"),
        ("importance_sampling_level", "sequence", "importance ratio"),
        ("off_policy_mask_threshold", 0.5, "importance ratio"),
        ("scale_rewards", "batch", "loss_type"),
        ("multi_objective_aggregation", "normalize_then_sum", "weighted sum"),
        ("entropy_coef", 0.01, "entropy"),
        ("top_entropy_quantile", 0.2, "entropy"),
    ],
)
def test_options_without_meaning_for_rift_are_refused(tmp_path, option, value, reason):
    with pytest.raises(ValueError, match=rf"^{option} must be .* with loss_type='rift', got .*{reason}"):
        grpo_config(tmp_path, **{option: value})


def test_a_generation_batch_reused_across_optimizer_steps_is_refused(tmp_path):
    with pytest.raises(ValueError, match="steps_per_generation must divide gradient_accumulation_steps.*stale"):
        grpo_config(tmp_path, per_device_train_batch_size=4, steps_per_generation=2)


def test_unknown_loss_type_and_level_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^loss_type must be one of \[.*'rift_gpg_scaled'\], got 'rfit'"):
        grpo_config(tmp_path, loss_type="rfit")
    with pytest.raises(ValueError, match="rift_level must be one of"):
        grpo_config(tmp_path, rift_level="word")
    with pytest.raises(ValueError, match="rift_level must stay 'token' unless loss_type is a RIFT loss"):
        grpo_config(tmp_path, loss_type="dapo", rift_level="sequence")


def test_trl_options_stay_trls_own_with_trl_loss_types(tmp_path):
    args = grpo_config(tmp_path, loss_type="dapo", beta=0.04, epsilon=0.3)
    assert not args.is_rift and args.beta == 0.04


def test_a_plain_grpo_config_with_a_rift_loss_type_is_refused(model_dir, tmp_path):
    from trl import GRPOConfig

    from rift_losses.integrations.trl import RiftGRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], num_generations=4)
    args.loss_type = "rift"  # GRPOConfig does not check it
    with pytest.raises(TypeError, match="args must be a RiftGRPOConfig for loss_type='rift', got GRPOConfig"):
        RiftGRPOTrainer(model=str(model_dir), reward_funcs=[all_plus_one], args=args)


def test_completion_rewards_skip_unscorable_rows_in_their_group():
    """The pure reward step: weighted sum, NaN terms skipped, an all-NaN row 0 and out of its group's stats."""
    from rift_losses.integrations.trl.grpo import completion_rewards

    nan = float("nan")
    per_func = torch.tensor([[1.0, 0.5], [nan, -1.0], [nan, nan], [0.0, 1.0], [1.0, nan], [1.0, nan]])
    weights = torch.tensor([1.0, 2.0])
    raw = completion_rewards(per_func, weights, num_generations=3, normalization=None)
    assert raw.tolist() == [2.0, -2.0, 0.0, 2.0, 1.0, 1.0]
    gauss = completion_rewards(per_func, weights, num_generations=3, normalization="gaussian")
    expected = [1.0, -1.0, 0.0] + reference_normalize([2.0, 1.0, 1.0], 3, "gaussian")
    assert gauss.dtype == torch.float32 and torch.allclose(gauss.double(), torch.tensor(expected).double(), atol=1e-6)


def test_two_ranks_of_batch_4_equal_one_batch_of_8(model_dir, tmp_path):
    """torchrun, 2 gloo ranks, greedy generation (the same completions in both runs): the same step."""
    import json
    import os
    from pathlib import Path

    from grpo_helpers import GREEDY, by_prompt, early_stop_token
    from harness import free_port, run_command
    from trl_helpers import BIN

    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    script = Path(__file__).parent / "ddp_grpo_train.py"
    port = str(free_port())
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, str(script), str(model_dir)]
    eos = early_stop_token(model_dir)  # prompt 0's completions end early, prompt 1's do not
    done = run_command([*cmd, str(out), str(eos)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = json.loads((out / "logs.json").read_text())
    assert ddp["world"] == 2
    ddp_weights = torch.load(out / "weights.pt")

    greedy = {"generation_kwargs": GREEDY}
    tr = spy_trainer(model_dir, grpo_config(tmp_path / "single", **greedy), [by_prompt], prompt_rows(2), extra_eos=eos)
    tr.train()
    (inputs, _), *_ = tr.seen
    assert torch.allclose(inputs["rift_rewards"].sort().values, torch.tensor([-0.2] * 4 + [1.0] * 4))
    lengths = inputs["completion_mask"].sum(-1)
    assert lengths.min() < lengths.max()  # ranks hold different token counts: a per-rank mean would differ
    single = tr.model.state_dict()
    moved = max((single[k] - ddp_weights[k]).abs().max().item() for k in single)
    assert moved < 1e-6, moved
    (log,) = [h for h in tr.state.log_history if "loss" in h and "train_runtime" not in h]
    (ddp_log,) = ddp["logs"]
    for key in ("loss", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens"):
        assert math.isclose(log[key], ddp_log[key], rel_tol=1e-5, abs_tol=1e-7), (key, log[key], ddp_log[key])
