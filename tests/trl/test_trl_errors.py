"""Every refusal of the TRL adapter: raised before the model loads, naming the option (or column and row)."""

import math

import pytest
from trl_helpers import config, dataset, messages_rows, trainer

NOT_A_MODEL = "/nonexistent/model/dir"  # a refusal must come before the model loads


def _refused(tmp_path, match, *, rows=None, eval_rows=None, **overrides):
    with pytest.raises(ValueError, match=match):
        args = config(tmp_path, **{"loss_type": "rift", **overrides})
        from rift_losses.integrations.trl import RiftSFTTrainer

        RiftSFTTrainer(
            model=NOT_A_MODEL,
            args=args,
            train_dataset=dataset(rows or messages_rows()),
            eval_dataset=dataset(eval_rows) if eval_rows else None,
        )


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"loss_type": "rifft"}, r"loss_type must be one of .*'rift_gaussian'.*, got 'rifft'; did you mean 'rift'\?"),
        ({"packing": True}, r"packing must be False with loss_type='rift', got True: TRL's packing keeps only"),
        ({"eval_packing": True}, r"eval_packing must be False"),
        ({"padding_free": True, "rift_level": "sequence"}, r"padding_free must be False with rift_level='sequence'"),
        ({"label_smoothing_factor": 0.1}, r"label_smoothing_factor must be 0 with loss_type='rift', got 0.1"),
        (
            {"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": True}},
            r"liger_kernel_config\['fused_linear_cross_entropy'\] must be False",
        ),
        (
            {"loss_type": "nll", "rift_level": "sequence"},
            r"rift_level must stay 'token' unless loss_type is a RIFT loss",
        ),
        ({"rift_level": "sample"}, r"rift_level must be one of 'token', 'sequence', got 'sample'"),
        ({"reward_column": ""}, r"reward_column must be a non-empty column name"),
        ({"rift_fused_head": "liger"}, r"rift_fused_head must be one of 'rift', 'trl', 'false', got 'liger'"),
    ],
)
def test_config_refusals(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **{"loss_type": "rift", **overrides})


@pytest.mark.parametrize(("value", "want"), [(True, "rift"), (False, "false"), ("TRL", "trl"), ("true", "rift")])
def test_fused_head_choice_reads_booleans(tmp_path, value, want):
    assert config(tmp_path, loss_type="rift", rift_fused_head=value).rift_fused_head == want


def test_compute_loss_func_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"compute_loss_func must be None with loss_type='rift'"):
        from rift_losses.integrations.trl import RiftSFTTrainer

        RiftSFTTrainer(
            model=NOT_A_MODEL,
            args=config(tmp_path, loss_type="rift"),
            train_dataset=dataset(messages_rows()),
            compute_loss_func=lambda *a, **k: 0,
        )


def _with_reward(value, at=3):
    rows = messages_rows()
    rows[at]["reward"] = value
    return rows


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_bad_rewards_are_refused_naming_column_and_row(tmp_path, value):
    _refused(
        tmp_path,
        r"reward must be a finite number in every row, got .* in row 3 of dataset 'train'",
        rows=_with_reward(value),
    )


@pytest.mark.parametrize("values", [["1.0"] * 12, [True] * 12])
def test_strings_and_bools_are_refused(tmp_path, values):
    rows = messages_rows()
    for row, v in zip(rows, values):
        row["reward"] = v
    _refused(tmp_path, r"reward must be a finite number in every row, got .* in row 0 of dataset 'train'", rows=rows)


def test_missing_reward_column_is_refused(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "reward"} for r in messages_rows()]
    _refused(
        tmp_path,
        r"reward_column 'reward' must be a column of the train dataset .*got columns \['messages', 'group'\]",
        rows=rows,
    )
    _refused(tmp_path, r"reward_column 'score' must be a column of the train dataset", reward_column="score")


def test_bad_eval_rewards_are_refused(tmp_path):
    _refused(tmp_path, r"row 1 of dataset 'eval'", eval_rows=_with_reward(math.nan, at=1))


def test_normalized_loss_without_group_or_prompt_is_refused(tmp_path):
    rows = [{"text": f"Q{i}: some text", "reward": r} for i, r in enumerate([1.0, -1.0, 0.5])]
    _refused(
        tmp_path,
        r"group_column 'group' must be a column of the train dataset for loss_type='rift_gaussian'",
        rows=rows,
        loss_type="rift_gaussian",
    )


def test_normalized_loss_on_an_iterable_dataset_is_refused(tmp_path):
    from rift_losses.integrations.trl import RiftSFTTrainer

    stream = dataset(messages_rows()).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"loss_type='rift_gpg_mean' needs a map-style dataset"):
        RiftSFTTrainer(model=NOT_A_MODEL, args=config(tmp_path, loss_type="rift_gpg_mean"), train_dataset=stream)


def test_a_batch_without_rewards_is_refused(model_dir, tmp_path):
    tr = trainer(model_dir, config(tmp_path, loss_type="rift"), messages_rows())
    batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    batch.pop("rift_rewards")
    with pytest.raises(RuntimeError, match=r"got a batch without rewards"):
        tr.compute_loss(tr.model, batch)
    with pytest.raises(
        ValueError, match=r"reward must be a finite number in every row, got 'x' in example 1 of a batch"
    ):
        tr.data_collator([{**tr.train_dataset[0]}, {**tr.train_dataset[1], "reward": "x"}])


@pytest.mark.parametrize(
    "column,value,match",
    [
        (
            "reward",
            "1.0",
            r"reward must be a JSON number in every row of dataset 'train' for loss_type='rift_gaussian', got "
            r"a column that mixes JSON types",
        ),
        (
            "group",
            "1",
            r"group must hold one JSON type \(all strings or all numbers\) in dataset 'train' for "
            r"loss_type='rift_gaussian', got a column that mixes them",
        ),
    ],
)
def test_a_json_file_mixing_types_in_the_reward_or_group_column_is_refused(tmp_path, column, value, match):
    """`datasets` loads one "1.0" among numbers as its Json feature, reading it back as 1.0: refused, as in MS-Swift."""
    import json

    from datasets import load_dataset

    rows = messages_rows()
    for i, row in enumerate(rows):
        row["group"] = i // 4
    rows[3][column] = value
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert type(loaded.features[column]).__name__ == "Json"  # the silent conversion this guards against
    from rift_losses.integrations.trl import RiftSFTTrainer

    with pytest.raises(ValueError, match=match):
        RiftSFTTrainer(
            model=NOT_A_MODEL, args=config(tmp_path / "out", loss_type="rift_gaussian"), train_dataset=loaded
        )
