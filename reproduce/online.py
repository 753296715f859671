"""`make reproduce-online`: online RIFT (TRL's GRPOTrainer with loss_type="rift") against TRL's own GRPO loss.

A first measured look, on the task of `make reproduce` (reproduce/task.py: the same generated
arithmetic problems and splits, the same small Qwen2-shaped model and tokenizer):

1. Base: the init model trained on the base split's reference solutions with TRL's ``SFTTrainer``
   (plain NLL; `make reproduce` does this step with `swift sft`; the same steps, batch and rate).
2. Arms, each from the base, per seed: ``RiftGRPOTrainer`` with ``loss_type`` ``rift`` (eq. 5,
   the paper's +1 / -0.2 rewards, no normalization) and TRL's ``dapo`` (its default GRPO loss,
   group-normalized advantages, clipped ratio), with the same reward function, the same
   generations per step (P prompts x K completions, T = 0.7, top-p 0.8), the same steps and the
   same learning rate: the offline arms' shared rate, fixed in advance (`make reproduce` also tunes
   a rate per method on val; not done here: one run per arm and seed).
3. Evaluation: K samples per held-out eval problem (T = 0.7, top-p 0.8, transformers ``generate``),
   graded by the answer after "The answer is" (the task's answer format; the offline run grades
   with math-verify, which is not in the TRL environment); mean@K and pass@K per model, mean and
   standard deviation over seeds.

Writes OUT/results.json and OUT/results.md. Run with the TRL environment's Python
(`make reproduce-online`; `--smoke` for the toy-size run that `make test` includes).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import task  # noqa: E402

ARMS = ("rift", "dapo")
FULL = dict(  # noqa: C408 (keyword arguments read as a table)
    sizes={"base": 2000, "train": 256, "val": 64, "eval": 128},
    k=8,
    base_steps=800,
    base_batch=32,
    base_lr=3e-3,
    steps=32,
    prompts_per_step=4,
    lr=1e-3,
    seeds=(0, 1, 2),
    hidden=96,
    layers=3,
    max_new_tokens=48,
)
SMOKE = dict(  # noqa: C408
    sizes={"base": 16, "train": 4, "val": 2, "eval": 2},
    k=2,
    base_steps=1,
    base_batch=8,
    base_lr=3e-3,
    steps=1,
    prompts_per_step=2,
    lr=1e-3,
    seeds=(0,),
    hidden=32,
    layers=2,
    max_new_tokens=12,
)
TEMPERATURE, TOP_P = 0.7, 0.8
#: The paper's constant rewards.
CORRECT, WRONG = 1.0, -0.2
_ANSWER = re.compile(r"The answer is\s*(-?\d+)")


def say(text: str = "") -> None:
    print(text, flush=True)


def graded(completion: str, answer: str) -> bool:
    """Whether the last "The answer is N" of ``completion`` gives the exact integer ``answer``."""
    found = _ANSWER.findall(completion)
    return bool(found) and found[-1] == str(answer)


def answer_reward(completions, answer, **kwargs) -> list[float]:
    """The verifier as a TRL reward function: +1 for the right final answer, -0.2 otherwise."""
    return [CORRECT if graded(_text(c), a) else WRONG for c, a in zip(completions, answer)]


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def prompt_rows(rows: list[dict]) -> list[dict]:
    """Conversational GRPO prompts (the user's message) with the reference answer for the reward."""
    return [{"prompt": [m for m in r["messages"] if m["role"] == "user"], "answer": r["answer"]} for r in rows]


def common_args(out: Path, *, seed: int, lr: float, steps: int) -> dict:
    return {
        "output_dir": str(out),
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "seed": seed,
        "data_seed": seed,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "max_steps": steps,
        "logging_steps": max(1, steps // 8),
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def train_base(init: Path, rows: list[dict], out: Path, cfg: dict) -> Path:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_args(out, seed=0, lr=cfg["base_lr"], steps=cfg["base_steps"]),
        per_device_train_batch_size=cfg["base_batch"],
        max_length=256,
        assistant_only_loss=False,
        completion_only_loss=None,
    )
    model = AutoModelForCausalLM.from_pretrained(str(init), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(init))
    data = Dataset.from_list([{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    return out / "model"


def train_online(base: Path, rows: list[dict], out: Path, cfg: dict, *, arm: str, seed: int) -> tuple[Path, list]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rift_losses.integrations.trl import RiftGRPOConfig, RiftGRPOTrainer

    k = cfg["k"]
    args = RiftGRPOConfig(
        **common_args(out, seed=seed, lr=cfg["lr"], steps=cfg["steps"]),
        loss_type=arm,
        per_device_train_batch_size=cfg["prompts_per_step"] * k,
        num_generations=k,
        max_completion_length=cfg["max_new_tokens"],
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,
    )
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(base), padding_side="left")
    trainer = RiftGRPOTrainer(
        model=model,
        reward_funcs=[answer_reward],
        args=args,
        train_dataset=Dataset.from_list(prompt_rows(rows)),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return out / "model", logs


def evaluate(model_dir: Path, rows: list[dict], *, k: int, seed: int, max_new_tokens: int, batch: int = 64) -> dict:
    """mean@K (mean accuracy of the K samples) and pass@K (any of K right), averaged over problems."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    prompts = [
        tokenizer.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True) for r in rows
    ]
    requests = [(i, p) for i, p in enumerate(prompts) for _ in range(k)]
    right = [0] * len(rows)
    torch.manual_seed(seed)
    with torch.no_grad():
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            enc = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for (i, _), text in zip(chunk, texts):
                right[i] += graded(text, rows[i]["answer"])
    return {
        "mean@k": statistics.fmean(r / k for r in right),
        "pass@k": statistics.fmean(r > 0 for r in right),
    }


def summarize(values: list[dict]) -> dict:
    out = {}
    for key in ("mean@k", "pass@k"):
        xs = [v[key] for v in values]
        out[key] = statistics.fmean(xs)
        out[key + "_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return out


def report(results: dict) -> str:
    k = results["config"]["k"]
    lines = [
        f"| model | mean@{k} | pass@{k} |",
        "| --- | --- | --- |",
    ]
    for name, m in results["summary"].items():
        lines.append(
            f"| {name} | {100 * m['mean@k']:.1f} ± {100 * m['mean@k_std']:.1f} "
            f"| {100 * m['pass@k']:.1f} ± {100 * m['pass@k_std']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same pipeline at toy size (part of `make test`)")
    parser.add_argument("--out", type=Path, default=REPO / "reproduce_out" / "online")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    cfg = SMOKE if args.smoke else FULL
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    say(
        f"reproduce-online ({'smoke' if args.smoke else 'full'}): arms {list(ARMS)}, seeds {list(cfg['seeds'])}, "
        f"{cfg['steps']} steps x {cfg['prompts_per_step']} prompts x K = {cfg['k']}, LR {cfg['lr']} -> {out}"
    )
    splits = task.make_splits(cfg["sizes"])
    init = task.build_model(
        out / "init",
        task.corpus_of([r for rows in splits.values() for r in rows]),
        hidden_size=cfg["hidden"],
        num_layers=cfg["layers"],
    )
    t = time.monotonic()
    base = train_base(init, splits["base"], out / "base", cfg)
    size = f"{cfg['base_steps']} steps x batch {cfg['base_batch']}"
    say(f"1. base: TRL SFTTrainer, {size} ({time.monotonic() - t:.0f} s)")
    per_model: dict[str, list[dict]] = {"base": []}
    logs: dict[str, list] = {}
    sampling = {"k": cfg["k"], "max_new_tokens": cfg["max_new_tokens"]}
    for seed in cfg["seeds"]:
        per_model["base"].append(evaluate(base, splits["eval"], seed=seed, **sampling))
        for arm in ARMS:
            t = time.monotonic()
            model, logs[f"{arm}/{seed}"] = train_online(
                base, splits["train"], out / f"{arm}_s{seed}", cfg, arm=arm, seed=seed
            )
            result = evaluate(model, splits["eval"], seed=seed, **sampling)
            per_model.setdefault(arm, []).append(result)
            say(f"2. {arm} seed {seed}: {result} ({time.monotonic() - t:.0f} s)")
    results = {
        "config": {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.items()},
        "per_seed": per_model,
        "summary": {name: summarize(values) for name, values in per_model.items()},
        "train_logs": logs,
        "seconds": time.monotonic() - started,
    }
    problems = check_results(results)
    results["problems"] = problems
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report(results))
    say(report(results))
    say(f"reproduce-online: {results['seconds']:.0f} s, {out / 'results.md'}")
    for problem in problems:
        say(f"reproduce-online: FAILED: {problem}")
    return 1 if problems else 0


def check_results(results: dict) -> list[str]:
    """What must hold in any run, smoke included: every model evaluated per seed, every arm trained with a loss."""
    problems = []
    seeds = len(results["config"]["seeds"])
    for name in ("base", *ARMS):
        if len(results["per_seed"].get(name, [])) != seeds:
            problems.append(f"{name}: {len(results['per_seed'].get(name, []))} evaluations for {seeds} seeds")
    for run, logs in results["train_logs"].items():
        if not logs or any(not isinstance(h.get("loss"), (int, float)) for h in logs):
            problems.append(f"{run}: no training loss logged")
        if run.startswith("rift/") and any("rift/pos_tokens" not in h for h in logs):
            problems.append(f"{run}: no RIFT statistics logged")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
