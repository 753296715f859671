"""`make reproduce`: the RIFT paper's recipe end to end, offline, on a generated arithmetic task.

1. Data and model: generated multi-step arithmetic word problems with worked solutions
   (reproduce/task.py; disjoint splits base / train / val / eval), and a small Qwen2-shaped model
   with a small-vocabulary tokenizer, built locally.
2. Base: `swift sft` on the base split's reference solutions (never the rows the arms see), to a
   model that solves some problems but not all.
3. Buffer: `swift sample` (transformers engine, T = 0.7, top-p 0.8) draws K answers per train
   problem from the base; `rift-losses join` gives them their reference answers,
   `rift-losses label` grades them (+1.0 / -0.2), `rift-losses stats` prints Table 1/4,
   `rift-losses convert --to swift` writes the training buffer.
4. Arms, all from the base, each through its host recipe and each for the same number of epochs
   over its own data (:data:`PROTOCOL`): SFT and DFT on the train references (`swift sft`,
   `--enable_dft_loss true`), RFT (the positive samples, plain cross-entropy), DPO
   (`swift rlhf --rlhf_type dpo`; each sample paired with the reference solution, preferring the
   sample when correct and the reference otherwise), the naive loss (`--loss_type rift_naive`),
   RIFT token level (`--loss_type rift`), RIFT sequence level (`RIFT_LEVEL=sequence`) and RIFT on
   gaussian-normalized rewards (`--loss_type rift_gaussian`). Each method's learning rate is
   chosen on the val split from one log-spaced grid (the edge rule extends it at most once);
   every method also runs at one shared rate, and RIFT and DPO at one fifth of RFT's chosen rate.
5. Round 2 (Table 11): `swift sample` from each seed's RFT and RIFT models on the train problems,
   label, and the same method again.
6. Evaluation: K samples per held-out eval problem with the same sampler settings (MS-Swift's
   transformers engine in one process: reproduce/evaluate.py; common random numbers across models,
   each prompt computed once for its K samples), graded by `rift-losses label`,
   mean@K and pass@K by `rift-losses stats --k` (the same functions, called in-process). The
   labelled samples stay under OUT/eval/ (results.json "eval_files").
7. Statistics (reproduce/stats.py): per method the mean and 95% interval over seeds; RIFT against
   RFT and against DPO paired by seed and by a paired bootstrap over held-out problems; the
   validity gate (RFT above the base by more than the seed spread).
8. Writes OUT/results.json, results.md and results.png, and checks results.json against the kept
   evaluation files (reproduce/verify.py).

Run with the MS-Swift environment's Python (`make reproduce`; `REPRODUCE_ARGS=--smoke` for the
toy-size run that `make test` includes).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import evaluate  # noqa: E402
import stats  # noqa: E402
import task  # noqa: E402

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Arm:
    """One method: its training data, the host command and the loss options."""

    data: str  # "references" | "positives" | "buffer" | "pairs"
    command: str = "sft"  # "sft" (`swift sft`) | "dpo" (`swift rlhf --rlhf_type dpo`)
    loss_type: str | None = None  # --loss_type (None: the host's own cross-entropy)
    level: str | None = None  # RIFT_LEVEL
    dft: bool = False  # --enable_dft_loss true


#: method -> arm; the one list of methods (results.json, the report and the checks read it)
ARMS = {
    "sft": Arm("references"),
    "dft": Arm("references", dft=True),
    "rft": Arm("positives"),
    "dpo": Arm("pairs", command="dpo"),
    "naive": Arm("buffer", loss_type="rift_naive"),
    "rift": Arm("buffer", loss_type="rift", level="token"),
    "rift_seq": Arm("buffer", loss_type="rift", level="sequence"),
    "rift_gaussian": Arm("buffer", loss_type="rift_gaussian"),
}
METHODS = tuple(ARMS)
#: methods that get a second round (fresh samples from their own round-1 model)
ROUND2 = ("rft", "rift")
#: methods also trained at FIFTH x RFT's chosen learning rate (the paper: 2e-6 for RIFT and DPO, 1e-5 for RFT)
AT_FIFTH = ("rift", "dpo")
FIFTH = 0.2
#: the paired comparisons (a, b) reported as a - b
PAIRS = (("rift", "rft"), ("rift", "dpo"), ("rft", "base"))

#: requests per generate call in the evaluation: each chunk has its own seed (PROTOCOL "evaluation_sampling")
EVAL_CHUNK = 512
#: the reward of a wrong evaluation sample: `rift-losses label`'s own (+1.0 / -0.2, paper section 4.1)
NEGATIVE = -0.2

#: the protocol, fixed before any run of this version (issue 19); written into results.json
PROTOCOL = {
    "version": 8,
    "changes_from_version_7": (
        "version 7 (docs/reproduce.md) ran complete (81.6 min) on an Intel Xeon, where the same code and seeds "
        "trained a different base than on the AMD EPYC of versions 4-6, and failed its gate: val put every method "
        "at the bottom of the grid (RFT 20.6 / 20.1 / 19.4 at 1e-6 / 1e-5 / 1e-4, base 20.5), and held-out RFT was "
        "0.0 points above the base. Measured after version 7 (exploratory, docs/reproduce.md; version 7's base, "
        "RFT only, 3 epochs, 512 other val problems x 8 samples, sampling seeds 0 and 1 with common random "
        "numbers; base 18.9 / 19.3): with the same 4,096-sample buffer, RFT at 1e-4 scored -0.6 / -1.6 points "
        "from 512 problems x 8 samples, +0.5 / +0.4 from 1,024 x 4 and +1.5 / +0.5 from 2,048 x 2 (and +2.1 / "
        "+1.0 from 1,024 x 8, a buffer twice the size that does not fit in 90 minutes). Near-duplicate correct "
        "answers to one problem teach this model little; more distinct problems teach it more. Version 8 (1) "
        "trains on 2,048 problems with 2 samples each (samples_per_train_problem; the paper ablates K in 2, 4, 8, "
        "16, Table 8): the same 4,096-sample buffer, so the buffer arms, DPO and round 2 cost what they did; "
        "SFT and DFT now train on 2,048 reference solutions. Nothing else changed: task, tokenizer, model, base "
        "recipe, val and eval sizes, grid, edge rule, epochs, schedule, batch, seeds, evaluation (k = 8, common "
        "random numbers), gate and statistics. The base is still trained at run time; on this machine it is "
        'version 7\'s (results.json "base_sha256" names it), on another CPU it may differ'
    ),
    "evaluation_sampling": (
        "common random numbers: the requests (each prompt val_k or k times in a row) go to MS-Swift's "
        f"TransformersEngine in chunks of {EVAL_CHUNK}, chunk c of sampling seed s from torch.manual_seed(s * "
        f"{evaluate.SEED_STRIDE} + c); "
        "torch.multinomial draws one token as argmax(p / q), q ~ Exp(1) per vocabulary entry, so row r of a chunk "
        "gets the same noise at each step whatever the model (reproduce/evaluate.py)"
    ),
    "evaluation_grading": (
        f"rift-losses label (math-verify, +1.0 / {NEGATIVE}, at most 5 s per step of one response); a sample "
        f"whose grading runs out of time counts as wrong: it stays in its evaluation file with reward {NEGATIVE} and "
        '"grading": "timed out", and results.json "grading_timed_out" counts it per file (label leaves '
        "such a sample out of a training buffer; in an evaluation a dropped sample would leave its problem "
        "with fewer than k samples). Added after version 7's first attempt stopped on it, before any score of "
        "that attempt was read"
    ),
    "tokenizer": (
        "byte-level BPE, 384 tokens, digits single, trained on the problems of the fixed splits "
        "task.TOKENIZER_SPLITS (version 2's sizes), whatever the sizes below"
    ),
    "epochs": 3,
    "optimizer": "AdamW (adamw_torch, weight decay 0.1: MS-Swift's default)",
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.05,
    "global_batch": 32,
    "lr_grid": [1e-6, 1e-5, 1e-4],
    "lr_grid_mantissas": [1.0],
    "lr_grid_rule": "log-spaced, one value per decade (x10 per step), spans 100x; fixed before any run",
    "lr_selection": (
        "per method, the grid value with the best val mean@val_k (seed 0, common random numbers across the "
        "models: evaluation_sampling; val_k samples per val problem); ties go to the lower rate"
    ),
    "val_k": 8,
    "lr_edge_rule": (
        "if a method's best value is the lowest (highest) it was tried at, it is also tried one grid step "
        "lower (higher), at most once per method (the issue allows up to twice; one x10 step spans what two x3 "
        "steps of version 5 did); every extension is logged in lr_extensions"
    ),
    "lr_edge_max_extensions": 1,
    "shared_lr": 1e-5,
    "shared_lr_note": (
        "the paper's rate for SFT and RFT (section 4.1), and a grid value, so its seed-0 runs are the grid's; "
        "fixed before this protocol ran"
    ),
    "fifth_of_rft_lr": {"methods": list(AT_FIFTH), "factor": FIFTH},
    "sizes": {"base": 2000, "train": 2048, "val": 512, "eval": 512},
    "samples_per_train_problem": 2,
    "sizes_note": (
        "train 2,048 problems x 2 samples (a 4,096-sample buffer, as versions 5-7; round 2 samples the same way), "
        "val 512 (8 samples each), eval 512 (4,096 held-out samples per model); estimated at about 87 minutes on "
        "an idle 2-core CPU: version 7's measured 81.6 plus SFT and DFT on four times the references (16 runs, "
        "about 34 s more each)"
    ),
    "seeds": [0, 1, 2, 3, 4],
    "side_seeds": [0],
    "side_seeds_note": (
        "the shared-rate runs and the fifth-of-RFT's-rate runs use these seeds; the chosen-rate runs, the base "
        "and round 2 use all seeds. Where a method's chosen rate is the shared one, its shared-rate entry is the "
        "same runs on the side seeds"
    ),
    "seed_controls": "training data order (--seed, --data_seed) and the evaluation sampling seed",
    "base": (
        "swift sft on the base split's reference solutions only (disjoint from train/val/eval); "
        "it must solve some held-out problems but not all"
    ),
    "dpo_pairs": (
        "one pair per sample: (sample, reference solution) preferring the sample when it is correct "
        "and the reference otherwise; MS-Swift's DPO defaults (beta 0.1, sigmoid loss, reference = the base)"
    ),
    "round2": list(ROUND2),
    "validity_gate": "mean@k(rft) - mean@k(base) > max(sd(rft), sd(base)) over the seeds (>= 2)",
    "statistics": (
        "per method mean and 95% t-interval over seeds; paired by seed (t-interval of per-seed differences) "
        "and a paired bootstrap over held-out problems (2000 resamples, scores averaged over seeds)"
    ),
}

FULL = dict(  # noqa: C408 (keyword arguments read as a table)
    sizes=PROTOCOL["sizes"],
    k=8,
    buffer_k=PROTOCOL["samples_per_train_problem"],
    val_k=PROTOCOL["val_k"],
    base_steps=800,
    base_batch=32,
    base_lr=3e-3,
    epochs=PROTOCOL["epochs"],
    batch=PROTOCOL["global_batch"],
    warmup=PROTOCOL["warmup_ratio"],
    grid=tuple(PROTOCOL["lr_grid"]),
    grid_mantissas=tuple(PROTOCOL["lr_grid_mantissas"]),
    max_extensions=PROTOCOL["lr_edge_max_extensions"],
    shared_lr=PROTOCOL["shared_lr"],
    seeds=tuple(PROTOCOL["seeds"]),
    side_seeds=tuple(PROTOCOL["side_seeds"]),
    hidden=96,
    layers=3,
)
#: toy size for `make test`: one grid value (so no extension), one seed, every arm and both round-2 arms
SMOKE = dict(  # noqa: C408
    sizes={"base": 200, "train": 64, "val": 8, "eval": 16},
    k=8,
    buffer_k=PROTOCOL["samples_per_train_problem"],
    val_k=PROTOCOL["val_k"],
    base_steps=40,
    base_batch=32,
    base_lr=3e-3,
    epochs=PROTOCOL["epochs"],
    batch=16,
    warmup=PROTOCOL["warmup_ratio"],
    grid=(1e-3,),
    grid_mantissas=tuple(PROTOCOL["lr_grid_mantissas"]),
    max_extensions=0,
    shared_lr=1e-3,
    seeds=(0,),
    side_seeds=(0,),
    hidden=32,
    layers=2,
)
MAX_NEW_TOKENS = 48
TEMPERATURE, TOP_P = 0.7, 0.8

_lock = threading.Lock()
_cpu = {"children": 0.0}
_timings: dict[str, float] = {}
_timings_file: list[Path] = []
_grading_timed_out: dict[str, int] = {}  # evaluation file -> samples counted wrong (keep_timed_out)


def say(text: str = "") -> None:
    with _lock:
        print(text, flush=True)


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    e.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    for name in (
        "FORCE_TORCHRUN",
        "NPROC_PER_NODE",
        "RIFT_LOSSES_AUTOLOAD",
        "RIFT_LEVEL",
        "RIFT_GROUP_COLUMN",
        "RIFT_REWARD_COLUMN",
    ):
        e.pop(name, None)
    e.update(extra or {})
    return e


def run(cmd: list, log: Path, *, extra_env: dict | None = None) -> float:
    """Run a command (its output to ``log``); fail loudly with the log's tail. Returns its wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [str(c) for c in cmd], env=env(extra_env), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    what = str(log.relative_to(REPO) if log.is_relative_to(REPO) else log)
    with _lock:
        _cpu["children"] += usage.ru_utime + usage.ru_stime
        _timings[what] = round(wall, 1)
        if _timings_file:  # as they finish, so that a run stopped early still tells its per-command times
            with open(_timings_file[0], "a") as f:
                f.write(json.dumps({"command": what, "seconds": round(wall, 1), "rc": proc.returncode}) + "\n")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(
            f"{tail}\nreproduce: `{Path(str(cmd[0])).name} {' '.join(map(str, cmd[1:3]))} ...` failed "
            f"(exit {proc.returncode}); log: {log}"
        )
    return wall


def last_checkpoint(out: Path) -> Path:
    """The highest ``checkpoint-N`` of a run (it holds args.json, so `swift sample` can load it)."""
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not ckpts or not (ckpts[-1] / "args.json").exists():
        raise SystemExit(f"reproduce: no checkpoint was written in {out} (log: {out / 'train.log'})")
    return ckpts[-1]


def swift_train(
    model: Path,
    data: Path,
    out: Path,
    *,
    arm: Arm,
    lr: float,
    batch: int,
    seed: int,
    epochs: float | None = None,
    steps: int | None = None,
    scheduler: str = "cosine",
    warmup: float = 0.0,
    gradient_checkpointing: bool = False,
) -> Path:
    """`swift sft` (or `swift rlhf --rlhf_type dpo`) from ``model``; returns the last checkpoint.

    Trains ``epochs`` epochs over ``data`` (or exactly ``steps`` steps), AdamW, ``scheduler`` with
    ``warmup`` of the steps as warm-up, ``batch`` rows per step on one process. Gradient
    checkpointing (MS-Swift's default) is off unless asked for: at these sizes it only costs time,
    and the weights come out bit for bit the same (PROTOCOL "changes_from_version_6").
    """
    if (epochs is None) == (steps is None):
        raise ValueError(f"exactly one of epochs and steps must be given, got {epochs!r} and {steps!r}")
    shutil.rmtree(out, ignore_errors=True)
    head = ["rlhf", "--rlhf_type", "dpo"] if arm.command == "dpo" else ["sft"]
    cmd = [
        BIN / "swift",
        *head,
        "--model",
        model,
        "--model_type",
        "qwen2",
        "--template",
        "qwen",
        "--check_model",
        "false",
        "--dataset",
        data,
        "--split_dataset_ratio",
        "0",
        "--dataset_num_proc",
        "1",
        "--dataloader_num_workers",
        "0",
        "--tuner_type",
        "full",
        "--torch_dtype",
        "float32",
        "--max_length",
        "256",
        "--per_device_train_batch_size",
        batch,
        "--gradient_accumulation_steps",
        "1",
        "--optim",
        "adamw_torch",
        "--learning_rate",
        lr,
        "--lr_scheduler_type",
        scheduler,
        "--warmup_ratio",
        warmup,
        *(["--max_steps", steps, "--num_train_epochs", "1000"] if steps else ["--num_train_epochs", epochs]),
        "--seed",
        seed,
        "--data_seed",
        seed,
        "--logging_steps",
        "5",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1000000",  # MS-Swift saves the last step in any case
        "--save_only_model",
        "true",
        "--report_to",
        "none",
        "--output_dir",
        out,
        "--add_version",
        "false",
        "--gradient_checkpointing",
        str(gradient_checkpointing).lower(),
    ]
    if arm.loss_type:
        cmd += ["--loss_type", arm.loss_type]
    if arm.dft:
        cmd += ["--enable_dft_loss", "true"]
    run(cmd, out / "train.log", extra_env={"RIFT_LEVEL": arm.level} if arm.level else None)
    return last_checkpoint(out)


def swift_sample(model: Path, problems: Path, out_dir: Path, *, k: int, seed: int, n_problems: int) -> Path:
    """K samples per problem with `swift sample` (transformers engine); returns its output JSONL."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [
        BIN / "swift",
        "sample",
        "--model",
        model,
        "--dataset",
        problems,
        "--sampler_type",
        "sample",
        "--sampler_engine",
        "transformers",
        "--num_return_sequences",
        k,
        "--max_new_tokens",
        MAX_NEW_TOKENS,
        "--temperature",
        TEMPERATURE,
        "--top_p",
        TOP_P,
        "--seed",
        seed,
        "--torch_dtype",
        "float32",
        # every problem in one sampling batch (MS-Swift drops the remainder of len(dataset) // batch), and
        # all K x problems requests in generate calls of 512 (the engine's default is one at a time)
        "--num_sampling_batch_size",
        n_problems,
        "--engine_kwargs",
        json.dumps({"max_batch_size": 512}),
        "--output_dir",
        out_dir,
        "--output_file",
        "samples.jsonl",
    ]
    run(cmd, out_dir / "sample.log")
    return out_dir / "samples.jsonl"


def rift_losses(*args, log: Path) -> str:
    run([BIN / "rift-losses", *args, "--progress", "none"], log)
    return log.read_text()


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _prompt_key(messages: list[dict]) -> str:
    return json.dumps([m for m in messages if m["role"] != "assistant"], sort_keys=True)


def dpo_pairs(labelled: list[dict], references: list[dict], *, source: str = "labelled") -> list[dict]:
    """The paper's DPO pairs: each sample against its problem's reference solution.

    A correct sample (reward > 0) is preferred to the reference; otherwise the reference is preferred
    to the sample. Rows are MS-Swift's preference format: ``{"messages": [..., assistant=chosen],
    "rejected_response": rejected}``.

    Raises:
        ValueError: a sample's prompt has no reference row (naming the line of ``source``).
    """
    ref = {_prompt_key(r["messages"]): r["messages"][-1]["content"] for r in references}
    out = []
    for line, row in enumerate(labelled, 1):
        prompt = [m for m in row["messages"] if m["role"] != "assistant"]
        key = _prompt_key(row["messages"])
        if key not in ref:
            raise ValueError(f"{source}:{line}: messages must have a prompt of the reference problems, got {prompt!r}")
        sample = row["messages"][-1]["content"]
        chosen, rejected = (sample, ref[key]) if row["reward"] > 0 else (ref[key], sample)
        out.append({"messages": prompt + [{"role": "assistant", "content": chosen}], "rejected_response": rejected})
    return out


def buffer_from_samples(samples: Path, problems: Path, work: Path) -> dict:
    """join -> label -> stats -> convert: the user's route from `swift sample`'s output to a training buffer.

    Also writes the RFT data (the positive samples) and the DPO pairs of the same samples.
    """
    joined, labelled, buffer = work / "joined.jsonl", work / "labelled.jsonl", work / "buffer.jsonl"
    rift_losses("join", samples, "--problems", problems, "-o", joined, log=work / "join.log")
    rift_losses("label", joined, "-o", labelled, log=work / "label.log")
    table = rift_losses("stats", labelled, log=work / "stats.log")
    rift_losses("stats", labelled, "--json", log=work / "stats.json")
    rift_losses("convert", labelled, "-o", buffer, "--to", "swift", log=work / "convert.log")
    stats_ = json.loads((work / "stats.json").read_text())
    rows = read_jsonl(labelled)
    positives = task.write_jsonl(
        work / "positives.jsonl", ({"messages": r["messages"]} for r in rows if r["reward"] > 0)
    )
    pairs = task.write_jsonl(work / "pairs.jsonl", dpo_pairs(rows, read_jsonl(problems), source=str(labelled)))
    return {"buffer": buffer, "positives": positives, "pairs": pairs, "stats": stats_, "table": table}


def sample_for_eval(models: list[Path], problems: Path, out: Path, *, k: int, seed: int, first: int = 0) -> Path:
    """K samples per problem from each model (reproduce/evaluate.py, one process): out/<first + i>.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    run(
        [
            sys.executable,
            HERE / "evaluate.py",
            *models,
            "--problems",
            problems,
            "--out",
            out,
            "--first-index",
            first,
            "--k",
            k,
            "--seed",
            seed,
            "--temperature",
            TEMPERATURE,
            "--top-p",
            TOP_P,
            "--max-new-tokens",
            MAX_NEW_TOKENS,
            "--batch",
            EVAL_CHUNK,
        ],
        out / f"evaluate-{first}.log",
    )
    return out


def evaluate_all(jobs: int, batches: list[tuple[list[Path], Path, int]], problems: Path, *, k: int) -> None:
    """Sample every batch ``(models, out, seed)``, each split into ``jobs`` chunks run at once.

    A chunk is one reproduce/evaluate.py process; model i of a batch still lands in out/<i>.jsonl.
    """
    items = []
    for models, out, seed in batches:
        size = -(-len(models) // jobs)
        items += [(models[i : i + size], out, seed, i) for i in range(0, len(models), size)]
    parallel(jobs, lambda it: sample_for_eval(it[0], problems, it[1], k=k, seed=it[2], first=it[3]), items)


def keep_timed_out(raw: Path, labelled: Path, expected: int) -> None:
    """Put back into ``labelled`` the samples of ``raw`` whose grading ran out of time, as wrong.

    `rift-losses label` leaves such a sample out (no verdict is no reward in a training buffer); in an
    evaluation it counts as wrong (``PROTOCOL["evaluation_grading"]``): each is written in its place with
    reward ``NEGATIVE`` and ``"grading": "timed out"``, and counted in results.json ``"grading_timed_out"``.
    """
    graded, rows, j = read_jsonl(labelled), [], 0
    for row in read_jsonl(raw):
        if j < len(graded) and {key: v for key, v in graded[j].items() if key != "reward"} == row:
            rows.append(graded[j])
            j += 1
        else:
            rows.append({**row, "reward": NEGATIVE, "grading": "timed out"})
    if j != len(graded) or len(rows) - j != expected:
        raise SystemExit(f"reproduce: {labelled} does not follow {raw} in order; cannot restore its timed-out samples")
    task.write_jsonl(labelled, rows)
    _grading_timed_out[os.path.relpath(labelled, REPO)] = expected
    print(f"   {labelled.name}: {expected} sample(s) whose grading ran out of time count as wrong", flush=True)


def grade(out: Path, names: list[str], *, k: int) -> list[dict]:
    """`rift-losses label` and `stats --k` of each model's samples (the same functions, in-process).

    ``out/<i>.jsonl`` (model i) is graded into ``out/<names[i]>.jsonl`` (kept: the evaluation file)
    and removed. Main thread only: math-verify's timeouts use ``signal.alarm``.
    """
    from rift_losses.data import commands
    from rift_losses.data.at_k import at_k

    results = []
    for i, name in enumerate(names):
        raw, labelled = out / f"{i}.jsonl", out / f"{name}.jsonl"
        summary = commands.label(raw, labelled, negative=NEGATIVE, progress="none")
        if summary["unlabelled"]:
            raise SystemExit(f"reproduce: {summary['unlabelled']} eval samples in {raw} could not be graded")
        if summary["timed_out"]:
            keep_timed_out(raw, labelled, summary["timed_out"])
        raw.unlink()
        res = at_k(labelled, k=k)
        res["eval_file"] = os.path.relpath(labelled, REPO)
        results.append(res)
    return results


def summarize(per_seed: list[dict], extra: dict | None = None) -> dict:
    out = {}
    for key in ("mean_at_k", "pass_at_k"):
        iv = stats.t_interval([r[key] for r in per_seed])
        out[key], out[key + "_sd"], out[key + "_ci95"] = iv["mean"], iv["sd"], iv["ci95"]
    out["per_seed"] = per_seed
    out.update(extra or {})
    return out


def paired(methods: dict, root: Path, *, k: int) -> dict:
    """RIFT against RFT and DPO (and RFT against the base): paired by seed and a paired bootstrap over problems."""
    out = {}
    scores = {}

    def per_problem(name: str) -> list[dict]:
        if name not in scores:
            scores[name] = [stats.per_problem(root / r["eval_file"], k=k) for r in methods[name]["per_seed"]]
        return scores[name]

    for a, b in PAIRS:
        entry = {}
        for key in ("mean_at_k", "pass_at_k"):
            entry[key] = {
                "by_seed": stats.paired_by_seed(
                    [r[key] for r in methods[a]["per_seed"]], [r[key] for r in methods[b]["per_seed"]]
                ),
                "bootstrap_over_problems": stats.paired_bootstrap(
                    [s[key] for s in per_problem(a)], [s[key] for s in per_problem(b)]
                ),
            }
        entry["lr"] = {a: methods[a].get("lr"), b: methods[b].get("lr")}
        out[f"{a}_minus_{b}"] = entry
    return out


def next_lr(lr: float, *, up: bool, mantissas: tuple[float, ...]) -> float:
    """One step of the log-spaced grid whose values are ``mantissas`` times powers of ten.

    With ``(1, 3)``: 1e-5 -> 3e-5 -> 1e-4 (up), 1e-5 -> 3e-6 -> 1e-6 (down); with ``(1,)``: 1e-5 -> 1e-4
    (up), 1e-5 -> 1e-6 (down).
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    exponent = int(f"{lr:e}".split("e")[1])
    mantissa = round(lr / 10**exponent, 6)
    if mantissa not in mantissas:
        raise ValueError(f"lr must be {' or '.join(f'{m:g}' for m in mantissas)} times a power of ten, got {lr!r}")
    i = mantissas.index(mantissa)
    if up:
        value = mantissas[i + 1] * 10**exponent if i + 1 < len(mantissas) else mantissas[0] * 10 ** (exponent + 1)
    else:
        value = mantissas[i - 1] * 10**exponent if i > 0 else mantissas[-1] * 10 ** (exponent - 1)
    return float(f"{value:.6g}")


def machine() -> str:
    """The machine in words: CPU cores, memory, and the load average when the run ended."""
    memory = ""
    if Path("/proc/meminfo").exists():
        memory = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB"
    return f"{os.cpu_count()} CPU cores{memory}, load average at the end {os.getloadavg()[0]:.1f}"


def choose_lr(scores: dict[float, float]) -> float:
    """The learning rate with the best val score; ties go to the lower rate."""
    return max(scores, key=lambda lr: (scores[lr], -lr))


def edge_extension(
    scores: dict[float, float], extensions: int, max_extensions: int, *, mantissas: tuple[float, ...]
) -> tuple[float, str] | None:
    """The edge rule: (the next rate to try, why) when the best rate is an edge of those tried, else None.

    The next rate is one grid step past that edge (:func:`next_lr`).
    """
    if extensions >= max_extensions or len(scores) < 2:
        return None
    best = choose_lr(scores)
    if best == min(scores):
        return next_lr(best, up=False, mantissas=mantissas), f"best val score at the lowest rate tried ({best:g})"
    if best == max(scores):
        return next_lr(best, up=True, mantissas=mantissas), f"best val score at the highest rate tried ({best:g})"
    return None


def check_results(results: dict) -> list[str]:
    """What `make test` relies on in results.json: the shape the issue asks for and values in range."""
    required = ("base", *METHODS, *(f"{m}_round2" for m in ROUND2))
    problems = [f"methods must include {name!r}" for name in required if name not in results["methods"]]
    for key in ("protocol", "paired", "eval_files", "validity_gate", "methods_fifth_rft_lr"):
        if key not in results:
            problems.append(f"results must include {key!r}")
    seeds = {
        "methods": len(results["config"]["seeds"]),
        "methods_shared_lr": len(results["config"]["side_seeds"]),
        "methods_fifth_rft_lr": len(results["config"]["side_seeds"]),
    }
    for group, n in seeds.items():
        for name, m in results.get(group, {}).items():
            for key in ("mean_at_k", "pass_at_k"):
                if not 0.0 <= m[key] <= 1.0:
                    problems.append(f"{group}.{name}.{key} must be in [0, 1], got {m[key]!r}")
            if m["mean_at_k"] > m["pass_at_k"] + 1e-12:
                problems.append(
                    f"{group}.{name}: mean@k must not exceed pass@k, got {m['mean_at_k']!r} > {m['pass_at_k']!r}"
                )
            if len(m["per_seed"]) != n:
                problems.append(f"{group}.{name}.per_seed must have {n} entries, got {len(m['per_seed'])}")
    for name, files in results.get("eval_files", {}).items():
        if files != [r["eval_file"] for r in results["methods"][name]["per_seed"]]:
            problems.append(f"eval_files.{name} must list methods.{name}.per_seed's files in order, got {files!r}")
    if results["k"] != results["config"]["k"]:
        problems.append(f"k must be {results['config']['k']}, got {results['k']!r}")
    return problems


def parallel(jobs: int, fn, items: list) -> list:
    if jobs <= 1:
        return [fn(item) for item in items]
    with cf.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(fn, items))


#: arm data, longest training first: stages start their runs in this order so that fewer cores idle at a
#: stage's end (every run is independent and seeded: the order changes no result)
_LONGEST_FIRST = ("pairs", "buffer", "positives", "references")


def longest_first(items: list) -> list:
    """``items`` (tuples whose first element is a method) with the longest trainings first, stably."""
    return sorted(items, key=lambda item: _LONGEST_FIRST.index(ARMS[item[0]].data))


def run_name(method: str, lr: float, seed: int, tag: str = "") -> str:
    return f"{method}{tag}-lr{lr:g}-s{seed}"


def main(argv: list[str] | None = None) -> int:  # noqa: C901 (the pipeline reads top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="the same pipeline at toy size (minutes; part of `make test`)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reproduce_out")
    parser.add_argument(
        "--jobs", type=int, default=2, help="commands run at once (default: %(default)s; each uses one thread)"
    )
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else FULL
    out: Path = args.out.resolve()
    k, buffer_k, val_k, seeds = cfg["k"], cfg["buffer_k"], cfg["val_k"], list(cfg["seeds"])
    started = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _timings_file[:] = [out / "timings.jsonl"]
    say(
        f"reproduce ({'smoke' if args.smoke else 'full'}): K = {buffer_k} per train problem, {k} per eval problem, "
        f"seeds {seeds}, LR grid "
        f"{list(cfg['grid'])} (edge rule: at most {cfg['max_extensions']} extensions), shared LR "
        f"{cfg['shared_lr']:g}, {cfg['epochs']} epochs x batch {cfg['batch']} per arm, cosine, "
        f"{cfg['warmup']:.0%} warm-up, {args.jobs} jobs -> {out}"
    )

    # 1. data and model
    splits = task.make_splits(cfg["sizes"])
    data = {name: task.write_jsonl(out / "data" / f"{name}.jsonl", rows) for name, rows in splits.items()}
    init = task.build_model(
        out / "init",
        task.tokenizer_corpus(),
        hidden_size=cfg["hidden"],
        num_layers=cfg["layers"],
    )
    say(f"1. data: {', '.join(f'{n} {len(r)}' for n, r in splits.items())} problems; model: {init}")

    # 2. base
    t = time.monotonic()
    base = swift_train(
        init,
        data["base"],
        out / "base",
        arm=Arm("references"),
        lr=cfg["base_lr"],
        steps=cfg["base_steps"],
        batch=cfg["base_batch"],
        seed=0,
        warmup=0.05,
    )
    base_sha256 = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    say(
        f"2. base: swift sft on {len(splits['base'])} reference solutions of the base split, "
        f"{cfg['base_steps']} steps ({time.monotonic() - t:.0f} s); model.safetensors sha256 {base_sha256[:16]}"
    )

    # 3. buffer
    t = time.monotonic()
    samples = swift_sample(
        base, data["train"], out / "round1" / "sample", k=buffer_k, seed=0, n_problems=len(splits["train"])
    )
    say(
        f"3. swift sample: {buffer_k} answers to each of {len(splits['train'])} train problems from the base "
        f"({time.monotonic() - t:.0f} s)"
    )
    round1 = buffer_from_samples(samples, data["train"], out / "round1")
    say(round1["table"])

    train_data = {
        "references": data["train"],
        "positives": round1["positives"],
        "buffer": round1["buffer"],
        "pairs": round1["pairs"],
    }
    say(
        "   arm data (rows): "
        + ", ".join(f"{name} {len(read_jsonl(path))}" for name, path in train_data.items())
        + f"; {cfg['epochs']} epochs each"
    )

    def train(method: str, lr: float, seed: int, *, start: Path = base, datasets: dict = train_data, tag: str = ""):
        arm = ARMS[method]
        if datasets[arm.data].stat().st_size == 0:  # e.g. RFT when no sample is correct: nothing to train on
            say(f"   {method}{tag}: {datasets[arm.data].name} is empty, so this arm is its starting model")
            return start
        return swift_train(
            start,
            datasets[arm.data],
            out / "runs" / run_name(method, lr, seed, tag),
            arm=arm,
            lr=lr,
            epochs=cfg["epochs"],
            batch=cfg["batch"],
            seed=seed,
            warmup=cfg["warmup"],
        )

    # 4a. learning rate per method on val (seed 0), with the edge rule
    t = time.monotonic()
    ckpts: dict[tuple, Path] = {}
    selection: dict[str, dict[float, float]] = {m: {} for m in METHODS}
    extensions: dict[str, list[dict]] = {m: [] for m in METHODS}
    todo = longest_first([(m, lr) for m in METHODS for lr in cfg["grid"]])
    round_no = 0
    while todo:
        done = parallel(args.jobs, lambda ml: train(ml[0], ml[1], seeds[0]), todo)
        for (m, lr), ckpt in zip(todo, done):
            ckpts[(m, lr, seeds[0])] = ckpt
        names = [run_name(m, lr, seeds[0]) for m, lr in todo]
        val_dir = out / "eval" / f"val{round_no}"
        evaluate_all(args.jobs, [(done, val_dir, seeds[0])], data["val"], k=val_k)
        for (m, lr), res in zip(todo, grade(val_dir, names, k=val_k)):
            selection[m][lr] = res["mean_at_k"]
        todo = []
        for m in METHODS:
            ext = edge_extension(
                selection[m], len(extensions[m]), cfg["max_extensions"], mantissas=cfg["grid_mantissas"]
            )
            if ext is not None:
                extensions[m].append({"lr": ext[0], "reason": ext[1]})
                todo.append((m, ext[0]))
                say(f"   edge rule: {m} also at {ext[0]:g} ({ext[1]})")
        todo = longest_first(todo)
        round_no += 1
    chosen = {m: choose_lr(selection[m]) for m in METHODS}
    say(f"4. learning rates chosen on val (mean@{val_k}, seed {seeds[0]}; {time.monotonic() - t:.0f} s):")
    for m in METHODS:
        say(
            f"   {m:<14} "
            + "  ".join(f"{lr:g}: {100 * v:5.1f}%" for lr, v in sorted(selection[m].items()))
            + f"   -> {chosen[m]:g}"
        )
    fifth = float(f"{FIFTH * chosen['rft']:.3g}")

    # 4b. every method at its chosen LR (all seeds), at the shared LR, and RIFT and DPO at a fifth of RFT's
    # (the side seeds)
    t = time.monotonic()
    side = list(cfg["side_seeds"])
    wanted = sorted(
        {(m, chosen[m], s) for m in METHODS for s in seeds}
        | {(m, cfg["shared_lr"], s) for m in METHODS for s in side}
        | {(m, fifth, s) for m in AT_FIFTH for s in side}
    )
    todo = longest_first([w for w in wanted if w not in ckpts])
    for w, ckpt in zip(todo, parallel(args.jobs, lambda w: train(*w), todo)):
        ckpts[w] = ckpt
    say(f"   trained {len(todo)} more runs ({time.monotonic() - t:.0f} s)")

    # 5. round 2: sample from each seed's RFT and RIFT model (chosen LR), label, the same method again
    t = time.monotonic()

    def round2(ms: tuple[str, int]) -> tuple[Path, dict]:
        method, seed = ms
        model = ckpts[(method, chosen[method], seed)]
        work = out / "round2" / f"{method}-s{seed}"
        smp = swift_sample(
            model, data["train"], work / "sample", k=buffer_k, seed=seed, n_problems=len(splits["train"])
        )
        buf = buffer_from_samples(smp, data["train"], work)
        return train(method, chosen[method], seed, start=model, datasets=buf, tag="_round2"), buf["stats"]

    r2_items = longest_first([(m, s) for m in ROUND2 for s in seeds])
    r2 = dict(zip(r2_items, parallel(args.jobs, round2, r2_items)))
    say(
        f"5. round 2: swift sample from the {'/'.join(ROUND2)} models, label, train again "
        f"({time.monotonic() - t:.0f} s)"
    )

    # 6. evaluation on the held-out split: each seed samples with its own sampling seed
    t = time.monotonic()
    entries = {  # seed -> [(result key, run name, model)]
        s: [("base", "base", base)]
        + [((m, lr), run_name(m, lr, s), ckpts[(m, lr, s)]) for m, lr, s_ in wanted if s_ == s]
        + [(f"{m}_round2", run_name(m, chosen[m], s, "_round2"), r2[(m, s)][0]) for m in ROUND2]
        for s in seeds
    }
    dirs = [out / "eval" / f"s{s}" for s in seeds]
    evaluate_all(args.jobs, [([e[2] for e in entries[s]], d, s) for s, d in zip(seeds, dirs)], data["eval"], k=k)
    by: dict = {}
    for d, s in zip(dirs, seeds):
        for (key, _, _), res in zip(entries[s], grade(d, [e[1] for e in entries[s]], k=k)):
            by.setdefault(key, []).append(
                {"seed": s, "mean_at_k": res["mean_at_k"], "pass_at_k": res["pass_at_k"], "eval_file": res["eval_file"]}
            )
    say(
        f"6. evaluated {sum(len(v) for v in entries.values())} models on {len(splits['eval'])} "
        f"held-out problems x {k} ({time.monotonic() - t:.0f} s)"
    )

    # 7. statistics
    methods = {"base": summarize(by["base"])}
    for m in METHODS:
        methods[m] = summarize(by[(m, chosen[m])], {"lr": chosen[m]})
    for m in ROUND2:
        methods[f"{m}_round2"] = summarize(by[f"{m}_round2"], {"lr": chosen[m]})

    def on_side(key) -> list[dict]:  # a chosen rate may equal the shared one: its other seeds are not side runs
        return [r for r in by[key] if r["seed"] in side]

    shared = {m: summarize(on_side((m, cfg["shared_lr"])), {"lr": cfg["shared_lr"]}) for m in METHODS}
    at_fifth = {m: summarize(on_side((m, fifth)), {"lr": fifth}) for m in AT_FIFTH}
    base_side = summarize(on_side("base"))  # the base on the side seeds, to pair the shared-rate runs with
    gate = stats.validity_gate(
        [r["mean_at_k"] for r in methods["rft"]["per_seed"]], [r["mean_at_k"] for r in methods["base"]["per_seed"]]
    )
    wall = time.monotonic() - started
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    results = {
        "k": k,
        "protocol": PROTOCOL
        | (
            {}
            if not args.smoke
            else {
                "smoke_overrides": {
                    key: cfg[key]
                    for key in ("grid", "max_extensions", "shared_lr", "seeds", "side_seeds", "batch", "sizes")
                }
            }
        ),
        "validity_gate": gate,
        "methods": methods,
        "methods_shared_lr": shared,
        "methods_fifth_rft_lr": at_fifth,
        "paired": paired(methods, REPO, k=k),
        "paired_shared_lr": paired(shared | {"base": base_side}, REPO, k=k),
        "eval_files": {name: [r["eval_file"] for r in m["per_seed"]] for name, m in methods.items()},
        "shared_lr": cfg["shared_lr"],
        "fifth_rft_lr": fifth,
        "lr_grid": list(cfg["grid"]),
        "lr_selection_val_mean_at_k": {
            m: {f"{lr:g}": v for lr, v in sorted(sel.items())} for m, sel in selection.items()
        },
        "lr_extensions": extensions,
        "buffer_stats": {
            "round1": round1["stats"],
            "round2": {m: [r2[(m, s)][1] for s in seeds] for m in ROUND2},
        },
        "config": {key: v for key, v in cfg.items() if key != "grid"}
        | {
            "smoke": args.smoke,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "max_new_tokens": MAX_NEW_TOKENS,
            "jobs": args.jobs,
        },
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(_cpu["children"] + me.ru_utime + me.ru_stime, 1),
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),  # docs/data/reproduce.json keeps the date
        "timings_seconds": dict(sorted(_timings.items())),
        "grading_timed_out": dict(sorted(_grading_timed_out.items())),
        "machine": machine(),
        "base_sha256": base_sha256,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    bad = check_results(results)
    from verify import verify

    bad += verify(results, REPO)
    if bad:
        raise SystemExit("reproduce: results.json is malformed: " + "; ".join(bad))
    from report import markdown, plot

    (out / "results.md").write_text(markdown(results))
    plot(results, out / "results.png")
    say("")
    say((out / "results.md").read_text())
    if not gate["holds"]:
        say(
            "reproduce: THE VALIDITY GATE DOES NOT HOLD (RFT's mean@k is not above the base's by more than the "
            f"seed spread: {gate}); this run ranks nothing."
        )
    say(
        f"reproduce: done in {wall:.0f} s wall, {results['cpu_seconds']:.0f} s of CPU -> "
        f"{out / 'results.json'}, results.md, results.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
