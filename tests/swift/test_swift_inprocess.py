"""The reward's way through MS-Swift's own dataset loader and template, in this process.

Real MS-Swift objects (``load_dataset``, ``get_template``, ``Template.data_collator``) with the
adapter installed and a RIFT run activated by hand; no training.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import SimpleNamespace

import pytest

from swift_helpers import PROMPTS, RESPONSES, TURN_REWARDS, rows, turns_rows, write_jsonl
from swift_helpers import rows as rows_plain
from swift_reference import normalized

pytestmark = pytest.mark.slow

REWARDS = [r for _, _, r, _ in RESPONSES]


def sft_args(loss_type, **kw):
    base = {
        "loss_type": loss_type,
        "task_type": "causal_lm",
        "rlhf_type": None,
        "sequence_parallel_size": 1,
        "enable_dft_loss": False,
        "enable_channel_loss": False,
        "streaming": False,
        "cached_dataset": [],
        "cached_val_dataset": [],
        "padding_free": False,
        "packing": False,
    }
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def patches(monkeypatch, tmp_path):
    from rift_losses.integrations.swift import _activation, install

    install()
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    for name in ("RIFT_LEVEL", "RIFT_REWARD_COLUMN", "RIFT_GROUP_COLUMN"):
        monkeypatch.delenv(name, raising=False)
    with ExitStack() as stack:
        # activate(args): a pipeline with these arguments prepares its datasets until the test ends
        yield SimpleNamespace(
            activate=lambda args: stack.enter_context(_activation.pipeline_datasets(SimpleNamespace(args=args))),
            Run=_activation.Run,
            config=_activation.config,
            preflight=_activation.preflight,
        )


def load(path, **kw):
    from swift.dataset import load_dataset

    train, _ = load_dataset([str(path)], **kw)
    return train


def test_groups_default_to_the_prompt(patches, tmp_path):
    path = write_jsonl(tmp_path / "no_group.jsonl", rows(group=False))
    patches.activate(sft_args("rift_gpg_mean"))
    train = load(path)
    want = normalized(REWARDS, [p for p, *_ in RESPONSES], "gpg_mean")
    assert train["_rift_reward"] == pytest.approx(want, abs=1e-12)
    assert "reward" not in train.column_names and "group" not in train.column_names  # like any unused column


def test_group_column_must_name_every_row(patches, tmp_path):
    bad = rows()
    bad[3]["group"] = None
    path = write_jsonl(tmp_path / "hole.jsonl", bad)
    patches.activate(sft_args("rift_gaussian"))
    with pytest.raises(
        ValueError,
        match=r"group must be a string or a number in every row when the column exists, "
        r"got None in row 3 of dataset '.*hole.jsonl'",
    ):
        load(path)


def test_group_column_named_by_environment_must_exist(patches, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "mixed.jsonl", rows())
    monkeypatch.setenv("RIFT_GROUP_COLUMN", "problem_id")
    patches.activate(sft_args("rift_gpg_scaled"))
    with pytest.raises(
        ValueError, match=r"dataset '.*mixed.jsonl' must have the 'problem_id' column that RIFT_GROUP_COLUMN names"
    ):
        load(path)


def test_plain_rift_ignores_groups_and_keeps_columns_when_asked(patches, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", rows())
    patches.activate(sft_args("rift"))
    train = load(path, remove_unused_columns=False)
    assert train["_rift_reward"] == pytest.approx(REWARDS)
    assert train["reward"] == pytest.approx(REWARDS) and "group" in train.column_names


def test_run_without_rift_loss_warns_and_drops_the_column(patches, tmp_path, capfd, caplog):
    path = write_jsonl(tmp_path / "mixed.jsonl", rows())
    patches.activate(sft_args(None))
    train = load(path)
    assert train.column_names == ["messages", "dataset"]  # MS-Swift's own behaviour is unchanged
    err = capfd.readouterr().err + caplog.text
    assert "has 3 of 6 rows with reward < 0" in err and "the default cross-entropy" in err


@pytest.fixture
def template(tiny_model):
    from swift import get_processor, get_template

    def make(**kw):
        t = get_template(get_processor(str(tiny_model), model_type="qwen2"), template_type="qwen", max_length=128, **kw)
        t.set_mode("train")
        return t

    return make


def test_collator_gives_one_reward_per_sample_or_per_packed_token(patches, template):
    samples = [dict(r, _rift_reward=r["reward"]) for r in rows()[:3]]
    padded = template()
    encoded = [padded.encode(s, return_length=True) for s in samples]
    assert [e["_rift_reward"] for e in encoded] == [s["reward"] for s in samples]
    batch = padded.data_collator(encoded)
    assert batch["_rift_reward"].tolist() == pytest.approx([s["reward"] for s in samples])
    assert batch["_rift_reward"].shape == batch["labels"].shape[:1]

    free = template(padding_free=True)
    encoded = [free.encode(s, return_length=True) for s in samples]  # as MS-Swift's datasets call it
    want = [s["reward"] for s, e in zip(samples, encoded) for _ in e["input_ids"]]
    batch = free.data_collator(list(encoded))  # (the collator packs the list it is given in place)
    assert batch["_rift_reward"].shape == batch["labels"].shape == (1, len(want))
    assert batch["_rift_reward"][0].tolist() == pytest.approx(want)
    run = patches.Run("rift", "rift", None, patches.config.Knobs())
    patches.preflight(free, [encoded], run=run)  # one sample collates with its rewards

    with pytest.raises(ValueError, match="every sample of a RIFT batch must carry a reward, got none in sample 1 of 2"):
        padded.data_collator([padded.encode(samples[0]), padded.encode(rows()[1])])


def test_rows_without_rewards_collate_exactly_as_before(patches, template):
    padded = template()
    batch = padded.data_collator([padded.encode(r) for r in rows()[:2]])
    assert "_rift_reward" not in batch and set(batch) == {"input_ids", "labels", "attention_mask"}
    assert PROMPTS  # the rows above are the tests' shared dataset


def test_a_local_file_without_the_reward_column_is_refused_at_activation(patches, tmp_path):
    """Activation runs before the model loads: a local JSONL without the column is refused then, not after."""
    path = write_jsonl(tmp_path / "no_reward.jsonl", rows(reward_column="score"))
    with pytest.raises(
        ValueError,
        match=r"dataset '.*no_reward.jsonl' must have a 'reward' column with one reward per "
        r"row for --loss_type rift, got columns \['group', 'messages', 'score'\] "
        r"\(name yours with RIFT_REWARD_COLUMN=...\)",
    ):
        patches.activate(sft_args("rift", dataset=[str(path)]))
    patches.activate(sft_args("rift", dataset=[str(path)], columns={"score": "reward"}))  # renamed: found


# --- per-turn rewards: from the raw messages to the tokens of each turn ----------------------------


def _spans(labels):
    spans, start = [], None
    for t, y in enumerate([*labels, -100]):
        if y != -100 and start is None:
            start = t
        elif y == -100 and start is not None:
            spans.append((start, t))
            start = None
    return spans


def test_per_turn_rewards_reach_the_tokens_of_their_turn(patches, tmp_path, template):
    rows = turns_rows()[:3]
    rows[0]["reward"] = 0.25  # a row reward beside per-turn rewards: the messages' own win
    rows.append({"messages": rows_plain()[0]["messages"], "reward": -0.7})  # a row-level row in the same dataset
    path = write_jsonl(tmp_path / "turns.jsonl", rows)
    patches.activate(sft_args("rift", dataset=[str(path)]))
    train = load(path)
    padded = template()
    encoded = [padded.encode(train[i]) for i in range(len(train))]
    for e, want in zip(encoded, TURN_REWARDS[:3]):
        spans = _spans(e["labels"])
        assert len(spans) == 2
        got = e["_rift_token_rewards"]
        assert [{got[t] for t in range(a, b)} for a, b in spans] == [{want[0]}, {want[1]}]
        assert all(got[t] == 0 for t in range(len(got)) if e["labels"][t] == -100)
    assert "_rift_token_rewards" not in encoded[3] and encoded[3]["_rift_reward"] == -0.7

    batch = padded.data_collator(encoded)
    assert batch["_rift_reward"].shape == batch["labels"].shape
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        want = e.get("_rift_token_rewards") or [-0.7] * n
        assert batch["_rift_reward"][i, :n].tolist() == pytest.approx(want)
        assert not batch["_rift_reward"][i, n:].any()

    left = template(padding_side="left")
    batch = left.data_collator([left.encode(train[i]) for i in range(len(train))])
    for i, e in enumerate(encoded):  # each token's reward beside its label, padding on the left
        n = len(e["input_ids"])
        assert batch["labels"][i, -n:].tolist() == e["labels"]
        assert batch["_rift_reward"][i, -n:].tolist() == pytest.approx(e.get("_rift_token_rewards") or [-0.7] * n)
        assert not batch["_rift_reward"][i, :-n].any()

    free = template(padding_free=True)
    encoded = [free.encode(train[i], return_length=True) for i in range(len(train))]
    want = [r for e in encoded for r in (e.get("_rift_token_rewards") or [-0.7] * len(e["input_ids"]))]
    batch = free.data_collator(list(encoded))
    assert batch["_rift_reward"].shape == batch["labels"].shape == (1, len(want))
    assert batch["_rift_reward"][0].tolist() == pytest.approx(want)


def test_a_turn_that_cannot_be_found_in_the_tokens_is_refused_at_collation(patches, tmp_path, template):
    """``--loss_scale last_round`` trains one turn of two: which reward its tokens get cannot be told."""
    path = write_jsonl(tmp_path / "turns.jsonl", turns_rows()[:2])
    patches.activate(sft_args("rift", dataset=[str(path)]))
    train = load(path)
    last_round = template(loss_scale="last_round")
    encoded = [last_round.encode(train[i]) for i in range(len(train))]
    assert "_rift_token_rewards" not in encoded[0]
    with pytest.raises(
        ValueError, match=r"per-turn rewards of row 0 of dataset .* got 1 runs for 2 trained turns .*last_round"
    ):
        last_round.data_collator(encoded)


def test_the_run_lives_on_the_pipeline_not_in_the_process(patches, tmp_path):
    """Outside a pipeline's ``_prepare_dataset`` the loader is MS-Swift's own; the run is the pipeline's attribute."""
    from rift_losses.integrations.swift import _activation, _state

    path = write_jsonl(tmp_path / "mixed.jsonl", rows())
    assert _state.current() is None
    assert "_rift_reward" not in load(path).column_names  # no pipeline: nothing of rift-losses
    pipeline = SimpleNamespace(args=sft_args("rift"))
    with _activation.pipeline_datasets(pipeline) as run:
        assert _state.current().run is run is getattr(pipeline, _state.RUN_ATTR)
        assert load(path)["_rift_reward"] == pytest.approx(REWARDS)
    assert _state.current() is None and getattr(pipeline, _state.RUN_ATTR) is run
    other = SimpleNamespace(args=sft_args(None))  # a second pipeline in the same process, another loss
    with _activation.pipeline_datasets(other) as none:
        assert none is None and "_rift_reward" not in load(path).column_names


def test_sharegpt_conversations_carry_their_turn_rewards(patches, tmp_path, template):
    """``conversations`` rows with ``from``/``value`` (MS-Swift converts them): the rewards follow the turns."""
    roles = {"user": "human", "assistant": "gpt", "tool": "observation"}
    rows_ = [
        {
            "conversations": [
                {"from": roles[m["role"]], "value": m["content"], "reward": m.get("reward")} for m in r["messages"]
            ]
        }
        for r in turns_rows()[:2]
    ]
    path = write_jsonl(tmp_path / "sharegpt.jsonl", rows_)
    patches.activate(sft_args("rift", dataset=[str(path)]))
    train = load(path)
    padded = template()
    for i, want in enumerate(TURN_REWARDS[:2]):
        e = padded.encode(train[i])
        got = e["_rift_token_rewards"]
        assert [{got[t] for t in range(a, b)} for a, b in _spans(e["labels"])] == [{want[0]}, {want[1]}]
