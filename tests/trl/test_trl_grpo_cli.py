"""The real ``trl grpo --config cfg.yaml`` with ``loss_type: rift``, as a subprocess (the .pth hook registers it)."""

import ast

import pytest
import yaml
from grpo_helpers import PROMPTS
from trl_helpers import run_cli, write_jsonl

pytestmark = pytest.mark.slow

REWARDS_MODULE = """
def length_parity(completions, **kwargs):
    return [1.0 if len(c) % 2 == 0 else -0.2 for c in completions]
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_grpo_cli")
    (root / "data").mkdir()
    write_jsonl(root / "data" / "train.jsonl", [{"prompt": p} for p in PROMPTS])
    (root / "online_rewards.py").write_text(REWARDS_MODULE)  # `trl grpo` imports reward_funcs from the cwd
    return root


def _config(workdir, model_dir, name, **keys):
    cfg = {
        "model_name_or_path": str(model_dir),
        "dataset_name": str(workdir / "data"),
        "output_dir": str(workdir / name),
        "reward_funcs": ["online_rewards.length_parity"],
        "loss_type": "rift",
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "bf16": False,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "max_steps": 2,
        "logging_steps": 1,
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


def test_trl_grpo_trains_online_rift_through_the_hook(workdir, model_dir):
    done = run_cli(["trl", "grpo", "--config", str(_config(workdir, model_dir, "hook"))], cwd=workdir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = _step_logs(done.stdout)
    assert len(logs) == 2, done.stdout[-3000:]
    for log in logs:
        assert abs(float(log["rift/pos_loss"]) + float(log["rift/neg_loss"]) - float(log["loss"])) < 1e-3, log
        assert float(log["rift/pos_tokens"]) + float(log["rift/neg_tokens"]) > 0
    assert (workdir / "hook" / "model.safetensors").exists()


def test_rift_trl_grpo_trains_online_rift_with_the_hook_off(workdir, model_dir):
    """The explicit route for sites that refuse .pth code: `rift-trl grpo` with RIFT_LOSSES_AUTOLOAD=0."""
    path = _config(workdir, model_dir, "explicit", max_steps=1)
    done = run_cli(["rift-trl", "grpo", "--config", str(path)], cwd=workdir, env_extra={"RIFT_LOSSES_AUTOLOAD": "0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (log,) = _step_logs(done.stdout)
    assert "rift/pos_loss" in log and "rift/neg_loss" in log
