"""Assistant turns and per-turn rewards through the real ``RiftSFTTrainer`` (TRL 1.16), tiny local model.

A RIFT loss trains the assistant turns of ``messages`` rows only, with or without ``{% generation %}``
markers in the chat template; an assistant message's own ``reward`` weighs its tokens.
"""

import math

import pytest
from trl_helpers import (
    TRAINING_TEMPLATE,
    TURN_REWARDS,
    config,
    dataset,
    messages_rows,
    reference_turn_loss,
    train_logs,
    trainer,
    turn_token_rewards,
    turns_rows,
)

STEP_KEYS = ("loss", "grad_norm", "rift/pos_loss", "rift/neg_loss", "rift/pos_tokens", "rift/neg_tokens")


def _close(a, b, rel=1e-5, abs_=1e-6):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _trained_text(tr, i):
    ex = tr.train_dataset[i]
    return tr.processing_class.decode([t for t, y in zip(ex["input_ids"], ex["labels"]) if y != -100])


def test_messages_rows_train_the_assistant_turns_only(model_dir, tmp_path):
    """Without generation markers TRL would train every token (the user turn and the template too)."""
    tr = trainer(model_dir, config(tmp_path / "one", loss_type="rift", max_steps=1), messages_rows())
    assert _trained_text(tr, 0) == "The answer is 0.<|im_end|>"
    tr = trainer(model_dir, config(tmp_path / "two", loss_type="rift", max_steps=1), turns_rows())
    assert _trained_text(tr, 1) == "<tool_call>ls 1</tool_call><|im_end|>It is 1 2.<|im_end|>"
    for i in range(len(TURN_REWARDS)):  # no prompt token is a target
        ex = tr.train_dataset[i]
        assert ex["labels"][0] == -100 and sum(y != -100 for y in ex["labels"]) < len(ex["labels"]) // 2


def test_per_turn_rewards_of_one_equal_trls_own_assistant_only_loss(model_dir, tmp_path):
    """All per-turn rewards +1 == TRL's own NLL with ``assistant_only_loss`` on the same rows, step after step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = turns_rows([(1.0, 1.0)] * 8)
    rift = train_logs(trainer(model_dir, config(tmp_path / "rift", loss_type="rift", max_steps=3), rows))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = TRAINING_TEMPLATE
    plain = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32"),
        args=config(tmp_path / "nll", config_class=SFTConfig, max_steps=3, assistant_only_loss=True),
        train_dataset=dataset(
            [{"messages": [{k: v for k, v in m.items() if k != "reward"} for m in r["messages"]]} for r in rows]
        ),
        processing_class=tokenizer,
    )
    nll = train_logs(plain)
    assert len(rift) == len(nll) == 3
    for a, b in zip(rift, nll):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5, (a, b)
        assert a["rift/neg_tokens"] == 0 and _close(a["rift/pos_loss"], a["loss"])


@pytest.mark.parametrize("loss_type", ["rift", "rift_naive"])
def test_mixed_per_turn_rewards_equal_the_float64_reference(model_dir, tmp_path, loss_type):
    """Each token weighed by its turn's reward; a 0-reward turn adds nothing but its tokens are counted."""
    rows = turns_rows()
    tr = trainer(model_dir, config(tmp_path, loss_type=loss_type, max_steps=1, per_device_train_batch_size=4), rows)
    ds = tr.train_dataset
    tokens = [
        (ds[i]["input_ids"], turn_token_rewards(tr.processing_class, ds[i]["input_ids"], rows[i]["messages"]))
        for i in range(4)
    ]
    for (_ids, rewards), i in zip(tokens, range(4)):  # the adapter's targets are the independently found turns
        assert [y != -100 for y in ds[i]["labels"]] == [r is not None for r in rewards]
    expected, pos, neg, pos_n, neg_n = reference_turn_loss(
        tr.model, tokens, loss=loss_type.removeprefix("rift_") if loss_type != "rift" else "rift"
    )
    (log,) = train_logs(tr)
    assert abs(log["loss"] - expected) <= 1e-5 * max(1.0, abs(expected)), (log["loss"], expected)
    assert _close(log["rift/pos_loss"], pos, rel=1e-4) and _close(log["rift/neg_loss"], neg, rel=1e-4, abs_=1e-5)
    assert (log["rift/pos_tokens"], log["rift/neg_tokens"]) == (pos_n, neg_n)
    assert pos_n + neg_n < sum(r is not None for _, rw in tokens for r in rw)  # row 2's 0-reward turn is counted


def test_per_turn_gradient_accumulation_padding_free_and_assistant_only_equal_one_batch(model_dir, tmp_path):
    rows = turns_rows()
    big = train_logs(trainer(model_dir, config(tmp_path / "b4", loss_type="rift", per_device_train_batch_size=4), rows))
    runs = {
        "ga": train_logs(
            trainer(
                model_dir,
                config(tmp_path / "ga", loss_type="rift", per_device_train_batch_size=2, gradient_accumulation_steps=2),
                rows,
            )
        ),
        "padding_free": train_logs(
            trainer(
                model_dir,
                config(tmp_path / "pf", loss_type="rift", per_device_train_batch_size=4, padding_free=True),
                rows,
            )
        ),
        "assistant_only": train_logs(
            trainer(
                model_dir,
                config(tmp_path / "ao", loss_type="rift", per_device_train_batch_size=4, assistant_only_loss=True),
                rows,
                chat_template=TRAINING_TEMPLATE,
            )
        ),
    }
    assert len(big) == 2
    for name, logs in runs.items():
        assert len(logs) == 2, name
        for a, b in zip(big, logs):
            for key in STEP_KEYS:
                assert _close(a[key], b[key], rel=1e-4), (name, key, a[key], b[key])


def test_a_message_without_a_reward_takes_the_rows(model_dir, tmp_path):
    rows = turns_rows([(None, -0.5)] * 4, row_reward=0.8)
    tr = trainer(model_dir, config(tmp_path, loss_type="rift", max_steps=1), rows)
    ex = tr.train_dataset[0]
    rewards = {r for r, y in zip(ex["rift_token_rewards"], ex["labels"]) if y != -100}
    assert rewards == {0.8, -0.5}


NOT_A_MODEL = "/nonexistent/model/dir"  # a refusal must come before the model loads


def _refused(tmp_path, rows, match, **overrides):
    from rift_losses.integrations.trl import RiftSFTTrainer

    with pytest.raises(ValueError, match=match):
        RiftSFTTrainer(
            model=NOT_A_MODEL,
            args=config(tmp_path, **{"loss_type": "rift", **overrides}),
            train_dataset=dataset(rows),
        )


def _with(turn, **fields):
    rows = turns_rows()
    rows[2]["messages"][turn] = {**rows[2]["messages"][turn], **fields}
    return rows


@pytest.mark.parametrize(
    "rows,overrides,match",
    [
        (
            _with(0, reward=1.0),
            {},
            r"reward must be on assistant messages only, got reward=1.0 on message 0 \(role 'user'\) in row 2",
        ),
        (_with(2, reward=-1.0), {}, r"on message 2 \(role 'tool'\) in row 2"),
        (
            turns_rows([(1.0, None)] * 3),
            {},
            r"reward must be given for every trained assistant message .* got neither for message 3 in row 0",
        ),
        (
            turns_rows(),
            {"loss_type": "rift_gaussian"},
            r"loss_type='rift_gaussian' must be used with one reward per row, got per-message reward",
        ),
        (turns_rows(), {"rift_level": "sequence"}, r"rift_level='sequence' must be used with one reward per row"),
    ],
)
def test_bad_per_turn_rewards_are_refused_before_the_model_loads(tmp_path, rows, overrides, match):
    _refused(tmp_path, rows, match, **overrides)


def test_a_non_number_turn_reward_is_refused_naming_row_and_message(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reward": "1.0"}]}]
    _refused(tmp_path, rows, r"reward must be a finite JSON number on message 1 in row 0 of dataset 'train', got '1.0'")


def test_a_per_message_reward_in_prompt_completion_rows_is_refused(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": "Q"}],
            "completion": [{"role": "assistant", "content": "A", "reward": 1.0}],
            "reward": 1.0,
        }
    ]
    _refused(tmp_path, rows, r"reward must be on the row, not on the messages, of a prompt/completion dataset")


def test_all_zero_rewards_warn_that_nothing_is_trained(model_dir, tmp_path):
    """MS-Swift and LLaMA-Factory warned; TRL did not (the run trained nothing, silently)."""
    with pytest.warns(UserWarning, match="all 4 rows have reward = 0"):
        trainer(model_dir, config(tmp_path / "rows", loss_type="rift"), messages_rows([0.0] * 4))
    with pytest.warns(UserWarning, match="this run trains NOTHING"):
        trainer(model_dir, config(tmp_path / "turns", loss_type="rift"), turns_rows([(0.0, 0.0)] * 4))


def test_from_value_conversations_train_the_assistant_turns_with_their_rewards(model_dir, tmp_path):
    """TRL converts ``conversations`` rows to ChatML itself; the adapter does it first, keeping turn rewards."""
    rows = [
        {
            "conversations": [
                {"from": m["role"], "value": m["content"], "reward": m.get("reward")} for m in r["messages"]
            ]
        }
        for r in turns_rows()
    ]
    tr = trainer(model_dir, config(tmp_path, loss_type="rift", max_steps=1), rows)
    assert _trained_text(tr, 1) == "<tool_call>ls 1</tool_call><|im_end|>It is 1 2.<|im_end|>"
    ex = tr.train_dataset[1]
    assert {r for r, y in zip(ex["rift_token_rewards"], ex["labels"]) if y != -100} == set(TURN_REWARDS[1])
