"""RIFT through the real ``llamafactory-cli train`` on CPU: values, order, equivalences, logs.

Every run trains the tiny model on a mixed alpaca + sharegpt dataset (one malformed sharegpt
sample, which LLaMA-Factory drops) in a fixed order (``disable_shuffling``), so the first
step's batch is the first two processed rows; the references below recompute the loss on
those rows from the untouched initial model, in float64, written independently of the core.
"""

import json
import math
import re
import statistics

import pytest
import torch

from lf_helpers import MALFORMED, ok, source_rows

pytestmark = pytest.mark.slow

TOL = 1e-5
RIFT = {"use_rift_loss": True, "rift_loss": "rift", "rift_reward_normalization": "gaussian"}
STATS = ("rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens", "rift/neg_prob")
TRAIN_MARKERS = ["Q0", "Q1", "Q2", "Q3", "Q4", "Q5", "Q10", "Q11", "Q13", "Q14", "Q15"]


@pytest.fixture(scope="session")
def rift_a(lf):
    """Full RIFT, gaussian over whole groups, 2 tokenizer workers, eval before training, tokenized_path saved."""
    config = lf.config(
        "rift_a",
        **RIFT,
        preprocessing_num_workers=2,
        tokenized_path=str(lf.root / "tok_a"),
        eval_dataset="eval",
        per_device_eval_batch_size=4,
        eval_strategy="steps",
        eval_steps=100,
        eval_on_start=True,
    )
    return ok(lf.train(config))


@pytest.fixture(scope="session")
def reference(lf, rift_a):
    """Initial model + the processed rows that rift_a saved to its tokenized_path."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(lf.model), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(lf.model))
    return model, tokenizer, load_from_disk(rift_a.config["tokenized_path"])


def _marker(tokenizer, row) -> str:
    return re.search(r"\b([QE]\d+):", tokenizer.decode(row["input_ids"])).group(1)


def _gaussian(pairs):
    """(reward, group) -> eq. 6 by hand: (r - mean) / pstdev within the group; 0 if all equal."""
    groups = {}
    for r, g in pairs:
        groups.setdefault(g, []).append(r)
    out = []
    for r, g in pairs:
        rs = groups[g]
        out.append(0.0 if max(rs) == min(rs) else (r - statistics.fmean(rs)) / statistics.pstdev(rs))
    return out


def _logprobs(model, row) -> torch.Tensor:
    """float64 log p of each target token of one processed row (labels shifted by hand)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].double()
    target = torch.tensor(row["labels"])[1:]
    mask = target != -100
    return logits[:-1].log_softmax(-1)[mask].gather(-1, target[mask, None])[:, 0]


def _core_sum(model, row, r: float) -> float:
    """The core's rift_loss (reduction sum) on one processed row."""
    from rift_losses import rift_loss, shift_labels

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row["input_ids"]])).logits
    labels = shift_labels(torch.tensor([row["labels"]]))
    return float(rift_loss(logits, labels, torch.tensor([r]), reduction="sum"))


def _rift_terms(logp: torch.Tensor, r: float) -> torch.Tensor:
    return -r * logp if r > 0 else (-r * logp.exp() if r < 0 else torch.zeros_like(logp))


def _close(a, b, tol=TOL):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_all_rewards_one_equal_plain_sft(lf, plain):
    """Reward 1.0 everywhere (LoRA, 2 tokenizer workers): every logged train and eval loss equals plain SFT."""
    config = lf.config(
        "ones",
        finetuning_type="lora",
        dataset="alp_one,sg_one",
        eval_dataset="eval_one",
        use_rift_loss=True,
        preprocessing_num_workers=2,
        per_device_eval_batch_size=4,
        eval_strategy="steps",
        eval_steps=3,
    )
    ones = ok(lf.train(config))
    base = [e["loss"] for e in plain.train_logs]
    got = [e["loss"] for e in ones.train_logs]
    assert len(base) == len(got) == 3
    assert all(_close(a, b) for a, b in zip(got, base)), (got, base)
    assert _close(ones.eval_loss(3), plain.eval_loss(3)), (ones.eval_loss(3), plain.eval_loss(3))
    for entry in ones.train_logs:  # all of it is the positive part
        assert entry["rift/neg_tokens"] == 0 and entry["rift/neg_loss"] == 0
        assert _close(entry["rift/pos_loss"], entry["loss"])
    assert all("rift/pos_loss" not in e for e in plain.log)


def test_rewards_follow_their_samples(rift_a, reference):
    """The saved rows carry their source sample's raw reward and group, across the dropped sample."""
    _, tokenizer, tokenized = reference
    rows = source_rows()
    for split, expected in (("train", TRAIN_MARKERS), ("validation", ["E0", "E1", "E2", "E3"])):
        data = tokenized[split]
        markers = [_marker(tokenizer, row) for row in data]
        assert markers == expected
        assert MALFORMED not in markers
        # exact up to the JSON reader's last bit (pyarrow reads 0.3 as 0.30000000000000004)
        assert list(data["rift_reward"]) == pytest.approx([rows[m][0] for m in markers], rel=1e-15)
        assert list(data["rift_group"]) == [rows[m][1] for m in markers]
    assert "RIFT train_dataset: 11 rewards" in rift_a.output
    assert "normalized (gaussian) over 5 whole groups" in rift_a.output
    assert "trains NOTHING" not in rift_a.output


def test_first_step_and_eval_equal_reference(rift_a, reference):
    """Mixed signed rewards, normalized over whole groups: first step and eval-on-start losses and stats."""
    model, tokenizer, tokenized = reference
    rows = source_rows()
    train = tokenized["train"]
    normalized = _gaussian([rows[m] for m in TRAIN_MARKERS])
    assert normalized[0] > 0 > normalized[1]  # a mixed first batch
    logps = [_logprobs(model, train[i]) for i in range(2)]
    terms = [_rift_terms(lp, r) for lp, r in zip(logps, normalized)]
    tokens = sum(len(lp) for lp in logps)
    first = rift_a.train_logs[0]
    assert _close(first["loss"], float(sum(t.sum() for t in terms)) / tokens), first
    core = sum(_core_sum(model, train[i], r) for i, r in enumerate(normalized[:2])) / tokens
    assert _close(first["loss"], core), (first, core)
    assert _close(first["rift/pos_loss"], float(terms[0].sum()) / tokens)
    assert _close(first["rift/neg_loss"], float(terms[1].sum()) / tokens)
    assert first["rift/pos_tokens"] == len(logps[0]) and first["rift/neg_tokens"] == len(logps[1])
    assert _close(first["rift/neg_prob"], float(logps[1].exp().mean()))
    for entry in rift_a.train_logs:
        assert _close(entry["rift/pos_loss"] + entry["rift/neg_loss"], entry["loss"])

    evals = tokenized["validation"]
    eval_rewards = _gaussian([rows[f"E{i}"] for i in range(4)])
    eval_logps = [_logprobs(model, row) for row in evals]
    eval_sum = sum(float(_rift_terms(lp, r).sum()) for lp, r in zip(eval_logps, eval_rewards))
    assert _close(rift_a.eval_loss(0), eval_sum / sum(len(lp) for lp in eval_logps))


def _same_run(a, b):
    assert len(a.train_logs) == len(b.train_logs) == 3
    for x, y in zip(a.train_logs, b.train_logs):
        keys = {k for k in x if k in ("loss", *STATS)}
        assert keys == {k for k in y if k in ("loss", *STATS)} >= {"loss", *STATS[:4]}, (x, y)
        for key in keys:  # rift/neg_prob is absent in a step without negative tokens
            assert _close(x[key], y[key]), (key, x, y)


def test_gradient_accumulation_equals_large_batch(lf, rift_a):
    """Batch 1 x 2 accumulation steps, from rift_a's tokenized_path: the same 3 steps as batch 2."""
    config = lf.config(
        "ga",
        **RIFT,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        tokenized_path=rift_a.config["tokenized_path"],
    )
    run = ok(lf.train(config))
    assert "Loaded tokenized dataset" in run.output
    _same_run(run, rift_a)


def test_logits_gradient_in_place_trains_the_same(lf, rift_a):
    """rift_inplace_grad: false (the logits gradient in its own buffer) logs what the default (in place) logs."""
    config = lf.config("not_inplace", **RIFT, rift_inplace_grad=False, tokenized_path=rift_a.config["tokenized_path"])
    run = ok(lf.train(config))
    _same_run(run, rift_a)
    norms = [
        [
            e["grad_norm"]
            for e in json.loads((r.output_dir / "trainer_state.json").read_text())["log_history"]
            if "grad_norm" in e
        ]
        for r in (run, rift_a)
    ]
    assert len(norms[0]) == len(norms[1]) == 3 and all(_close(a, b) for a, b in zip(*norms)), norms
    losses = [e["loss"] for e in rift_a.train_logs]
    assert abs(losses[0] - losses[2]) > 1e-3  # the weights moved: steps 2-3 compare the gradients too


def test_fused_head_off_trains_the_same(lf, rift_a):
    """rift_fused_head: false (logits materialized) logs the losses, statistics and gradient norms of the
    default, where training steps run the fused LM head (the logits never built)."""
    assert "rift_fused_head: training steps compute the loss from the LM head in chunks" in rift_a.output
    config = lf.config("not_fused", **RIFT, rift_fused_head=False, tokenized_path=rift_a.config["tokenized_path"])
    run = ok(lf.train(config))
    assert "rift_fused_head: training steps" not in run.output
    _same_run(run, rift_a)
    norms = [
        [
            e["grad_norm"]
            for e in json.loads((r.output_dir / "trainer_state.json").read_text())["log_history"]
            if "grad_norm" in e
        ]
        for r in (run, rift_a)
    ]
    assert len(norms[0]) == len(norms[1]) == 3 and all(_close(a, b) for a, b in zip(*norms)), norms


def test_torchrun_two_processes_equal_one(lf, rift_a):
    """2 CPU processes x batch 1 under torchrun (zero-flag activation in the workers): same as batch 2."""
    config = lf.config("ddp", **RIFT, per_device_train_batch_size=1, tokenized_path=rift_a.config["tokenized_path"])
    run = ok(lf.train(config, env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}))
    assert "world size: 2" in run.output
    _same_run(run, rift_a)
    _parts_add_up(run)


def _parts_add_up(run):
    assert run.train_logs
    for entry in run.train_logs:  # the statistics are scaled as the Trainer scales the loss it logs
        assert _close(entry["rift/pos_loss"] + entry["rift/neg_loss"], entry["loss"]), entry


def test_torchrun_statistics_add_up_without_averaging_tokens_across_devices(lf, rift_a):
    """average_tokens_across_devices false: each rank divides by its own tokens and the Trainer does not scale."""
    config = lf.config(
        "ddp_local_tokens",
        **RIFT,
        per_device_train_batch_size=1,
        average_tokens_across_devices=False,
        tokenized_path=rift_a.config["tokenized_path"],
    )
    run = ok(lf.train(config, env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}))
    assert "world size: 2" in run.output
    _parts_add_up(run)


def test_explicit_launcher_without_pth_hook(lf, plain):
    """rift-llamafactory-cli with RIFT_LOSSES_AUTOLOAD=0, through torchrun: reward 2.0 doubles the first loss."""
    config = lf.config("launcher", dataset="alp_two,sg_two", use_rift_loss=True)
    env = {"RIFT_LOSSES_AUTOLOAD": "0", "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "1"}
    run = ok(lf.train(config, command=("rift-llamafactory-cli", "train"), env=env))
    assert "distributed training: True" in run.output  # the worker ran under torchrun
    first = run.train_logs[0]
    assert _close(first["loss"], 2 * plain.train_logs[0]["loss"], 2 * TOL), (first, plain.train_logs[0])
    assert first["rift/neg_tokens"] == 0 and _close(first["rift/pos_loss"], first["loss"])


def test_sequence_level_naive_counts_sequences(lf, rift_a, reference):
    """rift_loss naive, rift_level sequence, 2 micro-batches of 1: sum of -r log pi(y|x) over 2 sequences."""
    model, _, tokenized = reference
    config = lf.config(
        "sequence",
        use_rift_loss=True,
        rift_loss="naive",
        rift_level="sequence",
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        max_steps=1,
        tokenized_path=rift_a.config["tokenized_path"],
    )
    run = ok(lf.train(config))
    rows = source_rows()
    train = tokenized["train"]
    total = sum(-rows[m][0] * float(_logprobs(model, train[i]).sum()) for i, m in enumerate(TRAIN_MARKERS[:2]))
    assert _close(run.train_logs[0]["loss"], total / 2), (run.train_logs[0], total / 2)


def test_without_a_group_column_rows_are_grouped_by_their_prompt(lf):
    """As in MS-Swift and TRL (LLaMA-Factory required the group column): 2 prompts x 2 responses."""
    run = ok(lf.train(lf.config("by_prompt", **RIFT, dataset="same_prompt", max_steps=1)))
    assert "normalized (gaussian) over 2 whole groups" in run.output, run.tail()
    assert "trains NOTHING" not in run.output  # one group has rewards 1.0 and -0.2


def test_rewards_that_normalize_to_zero_warn_that_nothing_trains(lf):
    """Every training group one row (gaussian gives 0), evaluation rewards all 0: two loud warnings; loss 0."""
    config = lf.config(
        "zero_rewards",
        **RIFT,
        dataset="single",
        eval_dataset="zeros",
        per_device_eval_batch_size=4,
        eval_strategy="steps",
        eval_steps=1,
        max_steps=1,
    )
    run = ok(lf.train(config))
    assert (
        "rift-losses: dataset 'train_dataset (single)': all 4 rewards are 0 after gaussian normalization "
        "within 4 groups" in run.output
    ), run.tail()
    assert "a group of one row, or whose rewards are all equal, normalizes to 0" in run.output
    assert "rift-losses: dataset 'eval_dataset (zeros)': all 4 rows have reward = 0." in run.output
    assert run.output.count("this run trains NOTHING on this dataset") == 2
    assert run.train_logs[0]["loss"] == 0 and run.eval_loss(1) == 0
    assert "trainable params" in run.output  # the model loaded (a refusal before it never prints this)
