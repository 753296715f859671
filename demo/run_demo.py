"""`make demo`: from sampled responses to a RIFT run in MS-Swift and LLaMA-Factory, offline.

1. Builds a tiny Qwen2-shaped model and tokenizer locally (``rift_dev.tiny_model``).
2. ``rift-losses label`` grades the shipped buffer (demo/rollouts.jsonl: 24 word problems x 8
   sampled worked answers) with math-verify: +1.0 correct, -0.2 wrong.
3. ``rift-losses stats``: the paper's Table 1 and Table 4 for it.
4. ``rift-losses convert`` to each host's layout.
5. ``swift sft --loss_type rift``, then the same with ``--loss_type rift_naive`` (eq. 1), then
   ``llamafactory-cli train`` with ``use_rift_loss: true`` and ``trl sft`` with
   ``loss_type: rift``; per-step loss with its positive and negative parts.
6. One PNG: RIFT against the naive loss on the same data (demo_out/rift_vs_naive.png), and a
   check of what it shows.

Run from the repository root with the MS-Swift environment's Python (``make demo`` does);
LLaMA-Factory and TRL run from their own environments (``--llamafactory-cli``, ``--trl-cli``). CPU is enough; the hosts
use a GPU when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from plot import check, check_png, plot  # noqa: E402

BIN = Path(sys.executable).parent  # the MS-Swift environment: rift-losses, swift


def _env() -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    # The model is tiny: one thread per process is faster than two that wait on each other, and
    # it keeps the demo's speed when other work shares the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    for name in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "RIFT_LOSSES_AUTOLOAD"):
        env.pop(name, None)
    return env


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text} " + "=" * max(0, 86 - len(text)))


def _shown_cmd(cmd: list) -> list[str]:
    return [Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd)]


def run(cmd: list, *, log: Path | None = None, show: bool = True, announce: bool = True) -> float:
    """Run a command as a user would type it; its output goes to ``log`` (or the terminal)."""
    shown = _shown_cmd(cmd)
    if announce:
        say("$ " + " ".join(shlex.quote(c) for c in shown))
    start, cpu_start = time.monotonic(), _children_cpu()
    if log is None:
        proc = subprocess.run([str(c) for c in cmd], env=_env(), cwd=REPO)
    else:
        with open(log, "w") as handle:
            proc = subprocess.run([str(c) for c in cmd], env=_env(), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    seconds, cpu = time.monotonic() - start, _children_cpu() - cpu_start
    if proc.returncode != 0:
        if log is not None:
            say(Path(log).read_text()[-6000:])
        raise SystemExit(
            f"demo: `{' '.join(shown[:3])} ...` failed with exit status {proc.returncode}"
            + (f" (log: {log})" if log else "")
        )
    if show and log is not None:
        say(f"   ({seconds:.0f} s, {cpu:.0f} s of CPU; full log: {_shown(log)})")
    return seconds


@dataclass
class Training:
    """One training run of the demo: announced in order, run side by side with the others."""

    name: str
    cmd: list
    log: Path
    read: Callable[[], list[dict]]
    label: str


def run_trainings(trainings: list[Training], jobs: int) -> None:
    """Run the announced training commands, ``jobs`` at a time (each process uses one thread)."""
    say(f"   running {len(trainings)} trainings, {jobs} at a time ...")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        seconds = list(pool.map(lambda t: run(t.cmd, log=t.log, show=False, announce=False), trainings))
    for t, sec in zip(trainings, seconds):
        say(f"   {t.label}: {sec:.0f} s; full log: {_shown(t.log)}")


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (shorter lines in the demo's output)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def read_swift_log(output_dir: Path) -> list[dict]:
    rows = []
    for line in (output_dir / "logging.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" not in entry or "rift_pos_loss" not in entry:
            continue
        rows.append({
            "step": int(str(entry["global_step/max_steps"]).split("/")[0]),
            "loss": float(entry["loss"]),
            "pos": float(entry["rift_pos_loss"]),
            "neg": float(entry["rift_neg_loss"]),
            "neg_prob": float(entry["rift_neg_prob"]),
            "grad_norm": float(entry["grad_norm"]),
        })  # fmt: skip
    return rows


def read_llamafactory_log(output_dir: Path) -> list[dict]:
    rows = []
    for line in (output_dir / "trainer_log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" not in entry or "rift/pos_loss" not in entry:
            continue
        rows.append({
            "step": int(entry["current_steps"]),
            "loss": float(entry["loss"]),
            "pos": float(entry["rift/pos_loss"]),
            "neg": float(entry["rift/neg_loss"]),
            "neg_prob": float(entry["rift/neg_prob"]),
        })  # fmt: skip
    return rows


def read_trl_log(stdout: str) -> list[dict]:
    """Per-step logs of ``trl sft`` (the Trainer prints each one as a Python dict on stdout)."""
    import ast

    rows = []
    for line in stdout.splitlines():
        if not line.startswith("{'loss'"):
            continue
        entry = ast.literal_eval(line)
        if "rift/pos_loss" not in entry:
            continue
        rows.append({
            "step": len(rows) + 1,
            "loss": float(entry["loss"]),
            "pos": float(entry["rift/pos_loss"]),
            "neg": float(entry["rift/neg_loss"]),
            "neg_prob": float(entry.get("rift/neg_prob", 0.0)),
        })  # fmt: skip
    return rows


def trl_config(model: Path, data_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    return {
        "model_name_or_path": str(model),
        "dataset_name": str(data_dir),
        "output_dir": str(out),
        "loss_type": "rift",
        "rift_level": "token",
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "max_steps": args.steps,
        "seed": args.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def print_steps(name: str, rows: list[dict], every: int) -> None:
    if not rows:
        raise SystemExit(f"demo: {name} logged no training step with RIFT's loss parts")
    say(f"   {name}: per-step loss = positive part (r > 0) + negative part (r < 0)")
    say(f"   {'step':>6} {'loss':>10} {'positive':>10} {'negative':>10} {'mean p (wrong answers)':>24}")
    for r in rows:
        if r["step"] == 1 or r["step"] % every == 0 or r is rows[-1]:
            say(f"   {r['step']:>6} {r['loss']:>10.4f} {r['pos']:>10.4f} {r['neg']:>10.4f} {r['neg_prob']:>24.4f}")


def swift_command(model: Path, data: Path, out: Path, loss_type: str, args: argparse.Namespace) -> list:
    return [
        BIN / "swift", "sft",
        "--model", model, "--model_type", "qwen2", "--template", "qwen", "--check_model", "false",
        "--dataset", data, "--split_dataset_ratio", "0", "--dataset_num_proc", "1", "--dataloader_num_workers", "0",
        "--loss_type", loss_type,
        "--tuner_type", "full", "--torch_dtype", "float32",
        "--per_device_train_batch_size", args.batch, "--gradient_accumulation_steps", "1",
        "--learning_rate", args.lr, "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
        "--max_steps", args.steps, "--num_train_epochs", "1000", "--seed", args.seed,
        "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
        "--output_dir", out, "--add_version", "false",
    ]  # fmt: skip


def llamafactory_config(model: Path, data_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    return {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "template": "qwen",
        "dataset": "rift_demo",
        "dataset_dir": str(data_dir),
        "cutoff_len": 1024,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "max_steps": args.steps,
        "num_train_epochs": 1000.0,
        "seed": args.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_rift_loss": True,
        "rift_loss": "rift",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_out", help="working directory (default: demo_out/)")
    parser.add_argument("--rollouts", type=Path, default=HERE / "rollouts.jsonl", help="sampled responses to label")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of each run (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate, constant (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="responses per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--llamafactory-cli", type=Path, default=REPO / ".venvs" / "llamafactory" / "bin" / "llamafactory-cli",
        help="LLaMA-Factory's CLI, in its own environment (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--skip-llamafactory", action="store_true", help="do not run LLaMA-Factory")
    parser.add_argument(
        "--trl-cli", type=Path, default=REPO / ".venvs" / "trl" / "bin" / "trl",
        help="TRL's CLI, in its own environment (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--skip-trl", action="store_true", help="do not run TRL")
    parser.add_argument(
        "--jobs", type=int, default=int(os.environ.get("DEMO_JOBS", "2")),
        help="training runs side by side, one thread each (default: %(default)s, env DEMO_JOBS)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    every = max(1, args.steps // 12)
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)

    heading("1. a tiny Qwen2-shaped model and tokenizer, built locally (no download)")
    from rift_dev.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(out / "tiny-qwen2")
    config = json.loads((model / "config.json").read_text())
    say(f"   {_shown(model)}: Qwen2ForCausalLM, hidden {config['hidden_size']}, "
        f"{config['num_hidden_layers']} layers, vocabulary {config['vocab_size']}")  # fmt: skip

    heading("2. label the sampled responses: math-verify grades each final answer")
    labelled = out / "labelled.jsonl"
    run([BIN / "rift-losses", "label", args.rollouts, "-o", labelled])

    heading("3. the buffer's statistics (the paper's Table 1 and Table 4)")
    run([BIN / "rift-losses", "stats", labelled])

    heading("4. convert to each host's dataset layout")
    swift_data = out / "swift" / "buffer.jsonl"
    lf_dir = out / "llamafactory"
    run([BIN / "rift-losses", "convert", labelled, "-o", swift_data, "--to", "swift"])
    run([BIN / "rift-losses", "convert", labelled, "-o", lf_dir / "rift_demo.jsonl", "--to", "llamafactory"])

    runs: dict[str, list[dict]] = {}
    trainings: list[Training] = []
    for step_no, (name, loss_type, what) in enumerate(
        (
            ("rift", "rift", "RIFT (eq. 5)"),
            ("naive", "rift_naive", "the naive reward-weighted loss (eq. 1), same data"),
        ),
        start=5,
    ):
        heading(f"{step_no}. MS-Swift: swift sft --loss_type {loss_type}: {what}")
        run_dir = out / "swift" / f"run-{loss_type}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        cmd = swift_command(model, swift_data, run_dir, loss_type, args)
        say("$ " + " ".join(shlex.quote(c) for c in _shown_cmd(cmd)))
        trainings.append(
            Training(
                name, cmd, run_dir / "train.log", partial(read_swift_log, run_dir), f"swift --loss_type {loss_type}"
            )
        )

    if not args.skip_llamafactory:
        heading("7. LLaMA-Factory: llamafactory-cli train with use_rift_loss: true")
        cli = args.llamafactory_cli
        if not cli.exists():
            raise SystemExit(
                f"demo: {cli} not found: `make demo` builds it (or pass --llamafactory-cli, or --skip-llamafactory)"
            )
        run_dir = out / "llamafactory" / "run-rift"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        import yaml

        cfg = run_dir.parent / "rift_demo.yaml"
        cfg.write_text(yaml.safe_dump(llamafactory_config(model, lf_dir, run_dir, args), sort_keys=False))
        shown = llamafactory_config(model, lf_dir, run_dir, args).items()
        say(f"   {cfg.name}: " + ", ".join(f"{k}: {v}" for k, v in shown
                                          if k.startswith(("use_rift", "rift_", "dataset"))))  # fmt: skip
        cmd = [cli, "train", cfg]
        say("$ " + " ".join(shlex.quote(c) for c in _shown_cmd(cmd)))
        trainings.append(
            Training(
                "rift_lf",
                cmd,
                run_dir / "train.log",
                partial(read_llamafactory_log, run_dir),
                "llamafactory use_rift_loss: true",
            )
        )

    if not args.skip_trl:
        heading("8. TRL: trl sft --config cfg.yaml with loss_type: rift")
        cli = args.trl_cli
        if not cli.exists():
            raise SystemExit(f"demo: {cli} not found: `make demo` builds it (or pass --trl-cli, or --skip-trl)")
        run_dir = out / "trl" / "run-rift"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        data_dir = out / "trl" / "data"  # a folder of its own: `dataset_name` loads every file in it
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(swift_data, data_dir / "buffer.jsonl")  # the same messages + reward + group rows
        import yaml

        cfg = run_dir.parent / "rift_demo.yaml"
        cfg.write_text(yaml.safe_dump(trl_config(model, data_dir, run_dir, args), sort_keys=False))
        say(f"   {cfg.name}: loss_type: rift, rift_level: token, dataset_name: {data_dir.name}/")
        log = run_dir / "train.log"
        cmd = [cli, "sft", "--config", cfg]
        say("$ " + " ".join(shlex.quote(c) for c in _shown_cmd(cmd)))
        trainings.append(
            Training("rift_trl", cmd, log, lambda log=log: read_trl_log(log.read_text()), "trl sft loss_type: rift")
        )

    heading("9. the trainings, side by side")
    run_trainings(trainings, args.jobs)
    for t in trainings:
        runs[t.name] = t.read()
        print_steps(t.label, runs[t.name], every)

    heading("10. the picture: RIFT against the naive loss")
    with open(labelled) as rows:
        responses = sum(1 for _ in rows)
    png = plot(
        runs, out / "rift_vs_naive.png", lr=args.lr, batch=args.batch,
        title=f"RIFT stays bounded, the naive reward-weighted loss runs away: tiny Qwen2, {args.rollouts.name} "
              f"({responses} responses), {args.steps} steps",
    )  # fmt: skip
    for fact in check(runs):
        say(f"   checked: {fact}")
    say(f"   checked: {check_png(png)}")
    say()
    say(
        f"demo: done in {time.monotonic() - started:.0f} s ({_children_cpu():.0f} s of CPU in the commands). "
        f"Look at {_shown(png)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
