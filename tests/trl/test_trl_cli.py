"""The real ``trl sft --config cfg.yaml`` (and ``rift-trl sft``) with ``loss_type: rift``, as subprocesses."""

import ast
import re
import sys

import pytest
import yaml
from trl_helpers import messages_rows, run_cli, turn_token_rewards, turns_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_cli")
    (root / "data").mkdir()
    write_jsonl(root / "data" / "train.jsonl", messages_rows())
    return root


def _config(workdir, model_dir, name, **keys):
    cfg = {
        "model_name_or_path": str(model_dir),
        "dataset_name": str(workdir / "data"),
        "output_dir": str(workdir / name),
        "loss_type": "rift",
        "rift_level": "token",
        "bf16": False,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "max_steps": 2,
        "logging_steps": 1,
        "per_device_train_batch_size": 2,
        "train_sampling_strategy": "sequential",
        "disable_tqdm": True,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
    }
    cfg.update(keys)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _step_logs(stdout: str) -> list[dict]:
    return [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{'loss'")]


def test_trl_sft_trains_rift_through_the_hook(workdir, model_dir):
    done = run_cli(["trl", "sft", "--config", str(_config(workdir, model_dir, "hook"))], cwd=workdir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = _step_logs(done.stdout)
    assert len(logs) == 2 and all(float(entry["rift/neg_tokens"]) > 0 for entry in logs)
    # Same numbers as the explicit launcher with the hook off (and as an in-process RiftSFTTrainer run).
    explicit = run_cli(
        ["rift-trl", "sft", "--config", str(_config(workdir, model_dir, "explicit"))],
        cwd=workdir,
        env_extra={"RIFT_LOSSES_AUTOLOAD": "0"},
    )
    assert explicit.returncode == 0, explicit.stdout[-3000:] + explicit.stderr[-3000:]
    assert _step_logs(explicit.stdout) == logs
    assert (workdir / "explicit" / "model.safetensors").exists()


def test_trl_sft_normalized_loss_and_sequence_level(workdir, model_dir):
    path = _config(workdir, model_dir, "gauss", loss_type="rift_gaussian", rift_level="sequence", max_steps=1)
    done = run_cli(["trl", "sft", "--config", str(path)], cwd=workdir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (log,) = _step_logs(done.stdout)
    assert "rift/pos_loss" in log


def test_trl_sft_trains_per_turn_rewards_of_a_jsonl_file(workdir, model_dir):
    """Agent rows with a reward per assistant turn and none on the row, through ``trl sft``."""
    (workdir / "turns").mkdir(exist_ok=True)
    write_jsonl(workdir / "turns" / "train.jsonl", turns_rows())
    path = _config(workdir, model_dir, "turns", dataset_name=str(workdir / "turns"), max_steps=1)
    done = run_cli(["trl", "sft", "--config", str(path)], cwd=workdir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (log,) = _step_logs(done.stdout)
    # rows 0-1 (batch 2): each assistant turn's tokens counted by its reward's sign, no prompt token
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    signs = []
    for row in turns_rows()[:2]:
        ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        signs += [r for r in turn_token_rewards(tokenizer, ids, row["messages"]) if r is not None]
    assert float(log["rift/pos_tokens"]) == sum(r > 0 for r in signs)
    assert float(log["rift/neg_tokens"]) == sum(r < 0 for r in signs) > 0


def test_a_misspelt_key_fails(workdir, model_dir):
    path = _config(workdir, model_dir, "typo")
    path.write_text(path.read_text().replace("rift_level:", "rift_levl:"))
    done = run_cli(["trl", "sft", "--config", str(path)], cwd=workdir)
    assert done.returncode != 0 and "unrecognized arguments: --rift_levl" in done.stderr
    assert not _step_logs(done.stdout)


def test_without_the_hook_trl_sft_refuses_rift(workdir, model_dir):
    path = _config(workdir, model_dir, "off")
    done = run_cli(["trl", "sft", "--config", str(path)], cwd=workdir, env_extra={"RIFT_LOSSES_AUTOLOAD": "0"})
    assert done.returncode != 0 and not _step_logs(done.stdout)


def test_a_refusal_comes_before_the_model_loads(workdir, model_dir):
    path = _config(workdir, model_dir, "packed", packing=True, max_length=64)
    done = run_cli(["trl", "sft", "--config", str(path)], cwd=workdir)
    assert done.returncode != 0
    assert re.search(r"packing must be False with loss_type='rift', got True", done.stderr)
    assert "Loading weights" not in done.stderr


def test_interpreter_start_and_plain_trl_import_stay_cheap():
    """The hook imports nothing at start; `import trl` outside `trl sft` registers nothing."""
    code = (
        "import sys, trl; print(sorted(m for m in sys.modules if m.startswith('rift_losses')), "
        "getattr(trl, '_rift_losses_registered', False), 'torch' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("[] False"), out
    start = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; print('_rift_losses_hook' in sys.modules, "
            "[m for m in ('torch', 'trl', 'rift_losses') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert start == "True []", start
