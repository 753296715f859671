"""`make reproduce-online`: online RIFT (TRL's GRPOTrainer with loss_type="rift") against TRL's own GRPO loss.

A first measured look, on the task of `make reproduce` (reproduce/task.py: the same generated
arithmetic problems and its protocol version 2's splits, the same small Qwen2-shaped model and
tokenizer), with the protocol in :data:`PROTOCOL`, fixed before its first complete run and written
into results.json:

1. Base: the init model trained on the base split's reference solutions with TRL's ``SFTTrainer``
   (plain NLL; `make reproduce` does this step with `swift sft`: the same steps, batch, rate and
   schedule).
2. Arms, each from the base: ``RiftGRPOTrainer`` with ``loss_type`` ``rift`` (eq. 5, the paper's
   +1 / -0.2 rewards, no normalization) and TRL's ``dapo`` (its default GRPO loss,
   group-normalized advantages, clipped ratio), with the same reward function, the same
   generations per step (P prompts x K completions, T = 0.7, top-p 0.8) and the same steps (one
   pass over the train problems).
3. Learning rate: the offline arms' rule (reproduce/run.py): per arm, the best val mean@K (seed 0)
   on the same log-spaced grid, ties to the lower rate, the edge rule extending it at most twice.
4. Seeds: each arm at its chosen rate for every seed (training order, generation sampling and the
   evaluation's sampling seed).
5. Evaluation: K samples per held-out eval problem (T = 0.7, top-p 0.8, transformers ``generate``),
   graded by the answer after "The answer is" (the task's answer format; the offline run grades
   with math-verify, which is not in the TRL environment); mean@K and pass@K per model; mean, sd
   and 95% t-interval over seeds; RIFT - dapo and each arm - base paired by seed and by a paired
   bootstrap over problems (reproduce/stats.py).

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

import run as offline  # noqa: E402 (the offline protocol: splits, grid and learning-rate rule)
import stats  # noqa: E402
import task  # noqa: E402

ARMS = ("rift", "dapo")
#: the paired comparisons (a, b), reported as a - b
PAIRS = (("rift", "dapo"), ("rift", "base"), ("dapo", "base"))

#: the protocol, fixed before the first complete run of this version (issue 22); written into results.json
PROTOCOL = {
    # make reproduce's version 2 splits and grid, the ones this protocol ran with (written out: make reproduce's
    # later versions changed their own, not this one's; the tokenizer's fixed corpus, task.TOKENIZER_SPLITS, is
    # these splits, so its tokenizer is the one this protocol ran with too)
    "sizes": {"base": 2000, "train": 128, "val": 64, "eval": 256},
    "base": (
        "TRL SFTTrainer on the base split's reference solutions: 800 steps x 32, AdamW, cosine from 3e-3 "
        "with 5% warm-up (make reproduce's swift sft base: the same steps, batch, rate and schedule)"
    ),
    "arms": {
        "rift": "RiftGRPOTrainer, loss_type rift (eq. 5 on the +1 / -0.2 rewards, no normalization, token level)",
        "dapo": "TRL's GRPOTrainer loss, loss_type dapo (its default): group-normalized advantages, clipped ratio",
    },
    "generations": (
        "4 prompts x 8 completions per step (T 0.7, top-p 0.8, 48 new tokens), 32 steps: one pass over the "
        "128 train problems, the problems whose samples form make reproduce's offline buffer"
    ),
    "optimizer": "AdamW (adamw_torch, weight decay 0.1 as make reproduce), cosine schedule, 5% warm-up",
    "lr_grid": [1e-5, 3e-5, 1e-4, 3e-4],
    "lr_selection": "the offline rule: per arm, the grid value with the best val mean@k (seed 0); ties to the lower",
    "lr_grid_mantissas": [1.0, 3.0],
    "lr_edge_rule": (
        "if a method's best value is the lowest (highest) it was tried at, it is also tried one grid step "
        "lower (higher), at most twice per method; every extension is logged in lr_extensions"
    ),
    "lr_edge_max_extensions": 2,
    "seeds": [0, 1, 2],
    "seed_controls": "training order and generation sampling (the trainer's seed) and the evaluation sampling seed",
    "evaluation": "8 samples per eval problem, T 0.7, top-p 0.8, graded by the last 'The answer is N'",
    "statistics": (
        "per model mean, sd and 95% t-interval over seeds; rift - dapo and each arm - base paired by seed "
        "(t-interval) and by a paired bootstrap over held-out problems (2000 resamples)"
    ),
    "fixed": (
        "before this version's first complete run; the one earlier full run (constant 1e-3, no search) was "
        "stopped in its base, before any arm trained"
    ),
}
FULL = dict(  # noqa: C408 (keyword arguments read as a table)
    sizes=PROTOCOL["sizes"],
    k=8,
    base_steps=800,
    base_batch=32,
    base_lr=3e-3,
    steps=32,
    prompts_per_step=4,
    grid=tuple(PROTOCOL["lr_grid"]),
    max_extensions=PROTOCOL["lr_edge_max_extensions"],
    warmup=0.05,
    weight_decay=0.1,
    seeds=tuple(PROTOCOL["seeds"]),
    hidden=96,
    layers=3,
    max_new_tokens=48,
)
#: toy size for `make test`: one grid value (so no extension) and one seed
SMOKE = dict(  # noqa: C408
    sizes={"base": 16, "train": 4, "val": 2, "eval": 2},
    k=2,
    base_steps=1,
    base_batch=8,
    base_lr=3e-3,
    steps=1,
    prompts_per_step=2,
    grid=(1e-3,),
    max_extensions=0,
    warmup=0.05,
    weight_decay=0.1,
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


def common_args(out: Path, cfg: dict, *, seed: int, lr: float, steps: int) -> dict:
    """TrainingArguments shared by the base and the arms: AdamW, cosine, warm-up, no checkpoints."""
    return {
        "output_dir": str(out),
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "seed": seed,
        "data_seed": seed,
        "optim": "adamw_torch",
        "weight_decay": cfg["weight_decay"],
        "learning_rate": lr,
        "lr_scheduler_type": "cosine",
        "warmup_steps": cfg["warmup"],  # a float below 1: the share of the steps (transformers 5)
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
        **common_args(out, cfg, seed=0, lr=cfg["base_lr"], steps=cfg["base_steps"]),
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


def train_online(
    base: Path, rows: list[dict], out: Path, cfg: dict, *, arm: str, seed: int, lr: float
) -> tuple[Path, list]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rift_losses.integrations.trl import RiftGRPOConfig, RiftGRPOTrainer

    k = cfg["k"]
    args = RiftGRPOConfig(
        **common_args(out, cfg, seed=seed, lr=lr, steps=cfg["steps"]),
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
        "right_per_problem": right,  # correct samples of each problem, in the split's order
    }


def summarize(values: list[dict]) -> dict:
    out = {}
    for key in ("mean@k", "pass@k"):
        iv = stats.t_interval([v[key] for v in values])
        out[key], out[key + "_std"], out[key + "_ci95"] = iv["mean"], iv["sd"], iv["ci95"]
    return out


def paired(per_model: dict[str, list[dict]], *, k: int) -> dict:
    """Each pair of :data:`PAIRS`: paired by seed and a paired bootstrap over the held-out problems."""
    out = {}
    for a, b in PAIRS:
        entry = {}
        for key in ("mean@k", "pass@k"):

            def scores(name: str, key: str = key) -> list[list[float]]:
                return [
                    [(r / k) if key == "mean@k" else float(r > 0) for r in v["right_per_problem"]]
                    for v in per_model[name]
                ]

            entry[key] = {
                "by_seed": stats.paired_by_seed([v[key] for v in per_model[a]], [v[key] for v in per_model[b]]),
                "bootstrap_over_problems": stats.paired_bootstrap(scores(a), scores(b)),
            }
        out[f"{a}_minus_{b}"] = entry
    return out


def _ci(iv: list) -> str:
    return "-" if iv[0] is None else f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]"


def report(results: dict) -> str:
    k = results["config"]["k"]
    lines = [
        f"Held-out eval ({results['config']['sizes']['eval']} problems x {k}): mean@{k} and pass@{k} in %, "
        f"mean ± sd over {len(results['config']['seeds'])} seed(s), per seed in brackets.",
        "",
        f"| model | LR (chosen on val) | mean@{k} | pass@{k} |",
        "| --- | --- | --- | --- |",
    ]
    for name, m in results["summary"].items():
        per = " / ".join(f"{100 * v['mean@k']:.1f}" for v in results["per_seed"][name])
        lr = results["lr"].get(name)
        lines.append(
            f"| {name} | {'-' if lr is None else f'{lr:g}'} | {100 * m['mean@k']:.1f} ± {100 * m['mean@k_std']:.1f} "
            f"({per}) | {100 * m['pass@k']:.1f} ± {100 * m['pass@k_std']:.1f} |"
        )
    lines += [
        "",
        "Paired differences in points (95% intervals: by seed, t; over problems, bootstrap):",
        "",
        "| difference | mean@k | by seed | over problems | pass@k | by seed | over problems |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["paired"].items():
        cells = []
        for key in ("mean@k", "pass@k"):
            e = entry[key]
            cells += [
                f"{100 * e['by_seed']['mean']:+.1f}",
                _ci(e["by_seed"]["ci95"]),
                _ci(e["bootstrap_over_problems"]["ci95"]),
            ]
        lines.append(f"| {name.replace('_minus_', ' - ')} | " + " | ".join(cells) + " |")
    grid = sorted({lr for sel in results["lr_selection_val_mean_at_k"].values() for lr in map(float, sel)})
    lines += [
        "",
        f"Learning-rate selection (val mean@{k} in %, seed {results['config']['seeds'][0]}):",
        "",
        "| arm | " + " | ".join(f"{lr:g}" for lr in grid) + " |",
        "| --- |" + " --- |" * len(grid),
    ]
    for arm, sel in results["lr_selection_val_mean_at_k"].items():
        vals = {float(lr): v for lr, v in sel.items()}
        lines.append(f"| {arm} | " + " | ".join(f"{100 * vals[lr]:.1f}" if lr in vals else "-" for lr in grid) + " |")
    for arm, ext in results["lr_extensions"].items():
        for e in ext:
            lines.append(f"\nEdge rule: {arm} also at {e['lr']:g} ({e['reason']}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:  # noqa: C901 (the pipeline reads top to bottom)
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
    seeds = list(cfg["seeds"])
    say(
        f"reproduce-online ({'smoke' if args.smoke else 'full'}): arms {list(ARMS)}, seeds {seeds}, "
        f"{cfg['steps']} steps x {cfg['prompts_per_step']} prompts x K = {cfg['k']}, LR grid {list(cfg['grid'])} "
        f"(edge rule: at most {cfg['max_extensions']} extensions), cosine, {cfg['warmup']:.0%} warm-up -> {out}"
    )
    splits = task.make_splits(cfg["sizes"])
    init = task.build_model(
        out / "init",
        task.tokenizer_corpus(),
        hidden_size=cfg["hidden"],
        num_layers=cfg["layers"],
    )
    t = time.monotonic()
    base = train_base(init, splits["base"], out / "base", cfg)
    size = f"{cfg['base_steps']} steps x batch {cfg['base_batch']}"
    say(f"1. base: TRL SFTTrainer, {size} ({time.monotonic() - t:.0f} s)")
    sampling = {"k": cfg["k"], "max_new_tokens": cfg["max_new_tokens"]}
    logs: dict[str, list] = {}
    models: dict[tuple[str, float, int], Path] = {}

    def train(arm: str, lr: float, seed: int) -> Path:
        if (arm, lr, seed) not in models:
            t = time.monotonic()
            name = f"{arm}-lr{lr:g}-s{seed}"
            models[(arm, lr, seed)], logs[name] = train_online(
                base, splits["train"], out / name, cfg, arm=arm, seed=seed, lr=lr
            )
            say(f"   trained {name} ({time.monotonic() - t:.0f} s)")
        return models[(arm, lr, seed)]

    # 2. learning rate per arm on val (seed 0), with the offline edge rule
    selection: dict[str, dict[float, float]] = {a: {} for a in ARMS}
    extensions: dict[str, list[dict]] = {a: [] for a in ARMS}
    todo = [(a, lr) for a in ARMS for lr in cfg["grid"]]
    while todo:
        for a, lr in todo:
            selection[a][lr] = evaluate(train(a, lr, seeds[0]), splits["val"], seed=seeds[0], **sampling)["mean@k"]
        todo = []
        for a in ARMS:
            ext = offline.edge_extension(
                selection[a], len(extensions[a]), cfg["max_extensions"], mantissas=tuple(PROTOCOL["lr_grid_mantissas"])
            )
            if ext is not None:
                extensions[a].append({"lr": ext[0], "reason": ext[1]})
                todo.append((a, ext[0]))
                say(f"   edge rule: {a} also at {ext[0]:g} ({ext[1]})")
    chosen = {a: offline.choose_lr(selection[a]) for a in ARMS}
    say(f"2. learning rates chosen on val (mean@{cfg['k']}, seed {seeds[0]}):")
    for a in ARMS:
        say(f"   {a:<5} " + "  ".join(f"{lr:g}: {100 * v:5.1f}%" for lr, v in sorted(selection[a].items())))
        say(f"         -> {chosen[a]:g}")

    # 3. every arm at its chosen rate for every seed; the held-out evaluation
    per_model: dict[str, list[dict]] = {"base": [], **{a: [] for a in ARMS}}
    for seed in seeds:
        per_model["base"].append(evaluate(base, splits["eval"], seed=seed, **sampling))
        for a in ARMS:
            result = evaluate(train(a, chosen[a], seed), splits["eval"], seed=seed, **sampling)
            per_model[a].append(result)
            say(f"3. {a} seed {seed}: mean@k {result['mean@k']:.3f}, pass@k {result['pass@k']:.3f}")
    results = {
        "protocol": PROTOCOL if not args.smoke else PROTOCOL | {"smoke_overrides": "SMOKE in reproduce/online.py"},
        "config": {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.items()},
        "lr": {"base": None, **chosen},
        "lr_selection_val_mean_at_k": {
            a: {f"{lr:g}": v for lr, v in sorted(sel.items())} for a, sel in selection.items()
        },
        "lr_extensions": extensions,
        "per_seed": per_model,
        "summary": {name: summarize(values) for name, values in per_model.items()},
        "paired": paired(per_model, k=cfg["k"]),
        "train_logs": logs,
        "seconds": time.monotonic() - started,
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": offline.machine(),
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
    for name in ARMS:
        if results["lr"].get(name) not in [float(lr) for lr in results["lr_selection_val_mean_at_k"][name]]:
            problems.append(f"{name}: its learning rate {results['lr'].get(name)!r} was not among those tried on val")
    for run, logs in results["train_logs"].items():
        if not logs or any(not isinstance(h.get("loss"), (int, float)) for h in logs):
            problems.append(f"{run}: no training loss logged")
        if run.startswith("rift-") and any("rift/pos_tokens" not in h for h in logs):
            problems.append(f"{run}: no RIFT statistics logged")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
