"""Every bad input fails before training, naming what is wrong; nothing falls back to cross-entropy.

The argument and data errors run in one subprocess through LLaMA-Factory's own entry point
(``llamafactory.train.tuner.run_exp``, what ``llamafactory-cli train`` calls), one config after
the other, to pay LLaMA-Factory's import once; a misspelt key also goes through the CLI.
"""

import json

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = r"""
import json, os, sys, traceback
spec = json.loads(sys.argv[1])
cases = spec["cases"]
from llamafactory.hparams import get_train_args
import llamafactory.train.sft.workflow as workflow
from llamafactory.train.tuner import run_exp

out = {}
# A config without RIFT parses into LLaMA-Factory's own classes and patches nothing at run time,
# but a dataset that maps a reward column gets a loud warning (its rewards would be ignored).
import logging
warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("rift_losses").addHandler(handler)
finetuning_args = get_train_args(spec["plain"])[3]
logging.getLogger("rift_losses").removeHandler(handler)
out["plain_warnings"] = warnings
out["plain"] = [type(finetuning_args).__name__, finetuning_args.use_rift_loss, workflow.CustomSeq2SeqTrainer.__module__]
# ALLOW_EXTRA_ARGS=1 still ignores extra keys that are not RIFT's (even "drift_*")
os.environ["ALLOW_EXTRA_ARGS"] = "1"
out["extra_drift"] = get_train_args({**spec["plain"], "drift_threshold": 3})[3].use_rift_loss
del os.environ["ALLOW_EXTRA_ARGS"]

for name, config, env in cases:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run_exp(config)
        out[name] = "no error"
    except Exception as error:
        out[name] = f"{type(error).__name__}: {error}"
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

# The collator keeps rewards float32 under a bf16 compute dtype (LLaMA-Factory casts float columns).
import torch
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments, ModelArguments
from llamafactory.model import load_tokenizer
from rift_losses.integrations.llamafactory._trainer import REWARD_BITS, RiftSFTDataCollator

tokenizer_module = load_tokenizer(ModelArguments(model_name_or_path=spec["plain"]["model_name_or_path"]))
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], DataArguments(template="qwen"))
collator = RiftSFTDataCollator(template=template, model=None, label_pad_token_id=-100, compute_dtype=torch.bfloat16,
                               **tokenizer_module)
features = [{"input_ids": [5, 6, 7][:n], "attention_mask": [1] * n, "labels": [-100, 6, 7][:n], "images": None,
             "videos": None, "audios": None, "rift_reward": r, "extra": 0.1} for n, r in ((3, -0.2), (2, 0.3))]
batch = collator(features)
out["collator"] = [batch[REWARD_BITS].view(torch.float32).tolist(), str(batch["extra"].dtype), sorted(batch)]
# per-turn rewards: (B, T) aligned with the padded labels, on either padding side
for side in ("right", "left"):
    collator.tokenizer.padding_side = side
    features = [{"input_ids": [5, 6, 7][:n], "attention_mask": [1] * n, "labels": [-100, 6, 7][:n], "images": None,
                 "videos": None, "audios": None, "rift_reward": 0.0, "rift_token_rewards": t,
                 "rift_turn_rewards": [0.0]} for n, t in ((3, [0.0, 0.5, -1.0]), (2, [0.0, 0.25]))]
    batch = collator(features)
    out[f"collator_{side}"] = [batch[REWARD_BITS].view(torch.float32).tolist(), batch["labels"].tolist(), sorted(batch)]
print("RESULTS " + json.dumps(out))
"""


def _expected_errors(lf):
    rift = {"use_rift_loss": True}
    gaussian = {**rift, "rift_reward_normalization": "gaussian"}
    return {
        # name: (overrides, environment, fragments the message must contain)
        "misspelt_allowed": (
            {**rift, "rift_los": "naive", "use_riftloss": True},
            {"ALLOW_EXTRA_ARGS": "1"},
            [
                "RIFT options must be spelt as one of",
                "'rift_loss'",
                "got ['rift_los', 'use_riftloss']",
                "did you mean 'rift_loss' for 'rift_los', 'use_rift_loss' for 'use_riftloss'?",
            ],
        ),
        "bad_choice": ({**rift, "rift_loss": "bogus"}, {}, ["rift_loss must be one of 'naive', 'rift', got 'bogus'"]),
        "did_you_mean": (
            {**rift, "rift_loss": "rifft"},
            {},
            ["rift_loss must be one of", "got 'rifft'; did you mean 'rift'?"],
        ),
        "options_without_use": (
            {"rift_loss": "naive", "rift_level": "token"},
            {},
            [
                "use_rift_loss must be true when RIFT options are set, got use_rift_loss: false "
                "with ['rift_loss', 'rift_level']"
            ],
        ),
        "bad_normalization": (
            {**rift, "rift_reward_normalization": "zscore"},
            {},
            ["rift_reward_normalization must be one of 'none', 'gaussian', 'gpg_mean', 'gpg_scaled'"],
        ),
        "dft": ({**rift, "use_dft_loss": True}, {}, ["must not be combined with another loss option", "use_dft_loss"]),
        "label_smoothing": ({**rift, "label_smoothing_factor": 0.1}, {}, ["label_smoothing_factor must be 0"]),
        "packing": ({**rift, "packing": True}, {}, ["packing must be false", "which tokens came from which sample"]),
        "neat_packing": ({**rift, "neat_packing": True}, {}, ["packing must be false", "neat_packing: True"]),
        "streaming": ({**rift, "streaming": True}, {}, ["streaming must be false", "whole dataset"]),
        "stage": ({**rift, "stage": "pt"}, {}, ["use_rift_loss must be used with stage: sft, got stage: pt"]),
        "unmapped": (
            {**rift, "dataset": "alp,unmapped"},
            {},
            ["columns must map \"reward\" for dataset 'unmapped'", "dataset_info.json"],
        ),
        "missing_col": (
            {**rift, "dataset": "missing_col"},
            {},
            ["columns.reward of dataset 'missing_col' must name a column of its data, got 'reward'", "'score'"],
        ),
        "nulls": (
            {**rift, "dataset": "nulls"},
            {},
            ["score must be a finite number in every row, got None in row 2 of dataset 'nulls'"],
        ),
        "strings": (
            {**rift, "dataset": "strings"},
            {},
            ["score must be a finite number in every row, got '1.0' in row 0 of dataset 'strings'"],
        ),
        "nonfinite": (
            {**rift, "dataset": "nonfinite"},
            {},
            ["score must be a finite number in every row, got nan in row 1 of dataset 'nonfinite'"],
        ),
        "one_bool": (
            {**rift, "dataset": "one_bool"},
            {},
            [
                "score must be a finite number in every row, got True in row 1 of dataset 'one_bool' (file ",
                "one_bool.jsonl', line 2) (a JSON number, not a bool",
            ],
        ),
        "mixed_group": (
            {**gaussian, "dataset": "mixed_group"},
            {},
            [
                "dataset 'mixed_group' must hold one JSON type per column for `datasets` to load it",
                "column 'pid' mixes JSON types: '1' (a string) in row 2",
                "0 (a number) in row 0",
            ],
        ),
        "group_missing": (
            {**gaussian, "dataset": "no_group_col"},
            {},
            ["columns.group of dataset 'no_group_col' must name a column of its data, got 'problem'"],
        ),
        # per-turn rewards (sharegpt, "reward_tag" in the tags): every bad one names row and message index
        "turn_untagged": (
            {**rift, "dataset": "sg_turns_untagged"},
            {},
            [
                "tags.reward_tag must name the per-message reward to train it, got score=1.0 on message 1 in row 0",
                '"tags": {"reward_tag": "score"}',
            ],
        ),
        "turn_string": (
            {**rift, "dataset": "sg_turns_string"},
            {},
            [
                "score must be a finite JSON number on message 1 in row 1 of dataset 'sg_turns_string' (file ",
                'write 1.0, not "1.0"',
            ],
        ),
        "turn_bool": (
            {**rift, "dataset": "sg_turns_bool"},
            {},
            ["score must be a finite JSON number on message 3 in row 1 of dataset 'sg_turns_bool'", "not true"],
        ),
        "turn_nonfinite": (
            {**rift, "dataset": "sg_turns_nonfinite"},
            {},
            ["score must be a finite JSON number on message 3 in row 1 of dataset 'sg_turns_nonfinite'", "inf"],
        ),
        "turn_on_user": (
            {**rift, "dataset": "sg_turns_user"},
            {},
            ["score must be on assistant messages only, got score=0.5 on message 2 (role 'human') in row 1"],
        ),
        "turn_missing": (
            {**rift, "dataset": "sg_turns_missing"},
            {},
            ["score must be given for every trained assistant message", "got neither for message 1 in row 1"],
        ),
        "tag_misspelt": (
            {**rift, "dataset": "sg_tag_misspelt"},
            {},
            [
                "each key of tags (dataset file 'turns.json') must be one of",
                "got 'rewrd_tag'; did you mean 'reward_tag'?",
            ],
        ),
        "tag_alone": (
            {**rift, "dataset": "sg_tag_alone"},
            {},
            ["tags must give role_tag, content_tag, assistant_tag beside reward_tag for dataset file 'turns.json'"],
        ),
        "tag_alpaca": (
            {**rift, "dataset": "alp_reward_tag"},
            {},
            ["tags.reward_tag must name the messages' reward key of a sharegpt dataset", "formatting 'alpaca'"],
        ),
        "turn_normalized": (
            {**gaussian, "dataset": "sg_turns"},
            {},
            [
                "rift_reward_normalization: 'gaussian' must be used with one reward per row, got per-message score "
                "values in dataset 'sg_turns'",
                "would be averaged away",
            ],
        ),
        "turn_sequence": (
            {**rift, "rift_level": "sequence", "dataset": "sg_turns"},
            {},
            ["rift_level: 'sequence' must be used with one reward per row"],
        ),
        "turn_on_prompt": (
            {**rift, "train_on_prompt": True, "dataset": "sg_turns"},
            {},
            ["train_on_prompt must be false with per-turn rewards, got true for dataset 'sg_turns'"],
        ),
        "stale_tokenized_path": (
            {**rift, "tokenized_path": str(lf.root / "tok_plain")},
            {},
            ["train_dataset must carry a 'rift_reward' column", "tok_plain", "saved by a run without use_rift_loss"],
        ),
    }


def test_bad_inputs_fail_before_training(lf, plain):
    expected = _expected_errors(lf)
    cases = [[name, lf.config(f"bad_{name}", **overrides), env] for name, (overrides, env, _) in expected.items()]
    proc = lf.python(_SCRIPT, json.dumps({"plain": lf.config("bad_plain"), "cases": cases}))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, proc.stdout[-3000:]
    results = json.loads(line[len("RESULTS ") :])

    assert results["plain"] == ["RiftFinetuningArguments", False, "llamafactory.train.sft.trainer"]
    assert results["extra_drift"] is False
    warned = results["plain_warnings"]
    assert len(warned) == 2, warned  # datasets alp and sg map reward column "score"
    for name, message in zip(("alp", "sg"), warned):
        assert f"dataset {name!r} maps a reward column ('score')" in message and "use_rift_loss is not set" in message
    for name, (_, _, fragments) in expected.items():
        message = results[name]
        assert message.startswith(("ValueError", "TypeError")), (name, message)
        for fragment in fragments:
            assert fragment in message, (name, fragment, message)
        assert not (lf.root / "runs" / f"bad_{name}" / "trainer_log.jsonl").exists(), name

    rewards, extra_dtype, keys = results["collator"]
    assert rewards == [pytest.approx(-0.2, abs=0, rel=1e-7), pytest.approx(0.3, abs=0, rel=1e-7)]
    assert extra_dtype == "torch.bfloat16"  # what LLaMA-Factory does to a float column the adapter did not take
    assert "rift_reward" not in keys and "rift_reward_bits" in keys
    for side, expected in (
        ("right", [[0.0, 0.5, -1.0], [0.0, 0.25, 0.0]]),
        ("left", [[0.0, 0.5, -1.0], [0.0, 0.0, 0.25]]),
    ):
        rewards, labels, keys = results[f"collator_{side}"]
        assert rewards == expected, (side, rewards)
        assert [[y != -100 for y in row] for row in labels] == [[r != 0 for r in row] for row in expected]
        assert not {"rift_token_rewards", "rift_turn_rewards", "rift_reward"} & set(keys)


def test_misspelt_key_fails_in_the_cli(lf):
    run = lf.train(lf.config("misspelt", use_rift_loss=True, rift_reward_normalisation="gaussian"))
    assert run.rc != 0
    assert "Some keys are not used by the HfArgumentParser: ['rift_reward_normalisation']" in run.output, run.tail()
    assert not run.log


def test_one_string_reward_among_numbers_fails_in_the_cli_before_the_model_loads(lf):
    """`datasets` fails on it with "Trailing data at position ...", naming nothing; the adapter names it first."""
    run = lf.train(lf.config("one_string", use_rift_loss=True, dataset="alp,one_string"))
    assert run.rc != 0
    assert (
        "score must be a finite number in every row, got '1.0' in row 2 of dataset 'one_string' (file " in run.output
    ), run.tail()
    assert '(a JSON number, not a string: write 1.0, not "1.0")' in run.output
    assert "Trailing data" not in run.output and "trainable params" not in run.output  # the model never loaded
    assert not run.log
