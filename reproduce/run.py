"""`make reproduce`: the RIFT paper's recipe end to end, offline, on a generated arithmetic task.

1. Data and model: generated multi-step arithmetic word problems with worked solutions
   (reproduce/task.py; splits base / train / val / eval), and a small Qwen2-shaped model with a
   small-vocabulary tokenizer, built locally.
2. Base: `swift sft` on the base split's reference solutions, to a model that solves some
   problems but not all.
3. Buffer: `swift sample` (transformers engine, T = 0.7, top-p 0.8) draws K answers per train
   problem from the base; `rift-losses join` gives them their reference answers,
   `rift-losses label` grades them (+1.0 / -0.2), `rift-losses stats` prints Table 1/4,
   `rift-losses convert --to swift` writes the training buffer.
4. Arms, all from the base with the same steps and batch: SFT on the train references, RFT (the
   positive samples, plain cross-entropy), the naive loss (`--loss_type rift_naive`), RIFT token
   level (`--loss_type rift`), RIFT sequence level (`RIFT_LEVEL=sequence`), and RIFT on
   gaussian-normalized rewards (`--loss_type rift_gaussian`). The learning rate of each method is
   chosen on the val split (mean@K, seed 0) from one grid; every method also runs at one shared
   learning rate (the grid's middle, fixed in advance).
5. Round 2: `swift sample` from each seed's RIFT model on the train problems, label, RIFT again.
6. Evaluation: K samples per held-out eval problem with the same sampler settings (MS-Swift's
   transformers engine in one process: reproduce/evaluate.py), graded by `rift-losses label`,
   mean@K and pass@K by `rift-losses stats --k` (the same functions, called in-process).
7. Writes reproduce_out/results.json, results.md and results.png.

Run with the MS-Swift environment's Python (`make reproduce`; `REPRODUCE_ARGS=--smoke` for the
toy-size run that `make test` includes).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import task  # noqa: E402

BIN = Path(sys.executable).parent
METHODS = ("sft", "rft", "naive", "rift", "rift_seq", "rift_gaussian")
#: method -> (training data, --loss_type or None for MS-Swift's cross-entropy, RIFT_LEVEL)
ARMS = {
    "sft": ("references", None, None),
    "rft": ("positives", None, None),
    "naive": ("buffer", "rift_naive", None),
    "rift": ("buffer", "rift", "token"),
    "rift_seq": ("buffer", "rift", "sequence"),
    "rift_gaussian": ("buffer", "rift_gaussian", None),
}

FULL = dict(  # noqa: C408 (keyword arguments read as a table)
    sizes={"base": 2000, "train": 256, "val": 64, "eval": 256},
    k=8,
    base_steps=800,
    base_batch=32,
    base_lr=3e-3,
    steps=64,
    batch=32,
    grid=(3e-4, 1e-3, 3e-3),
    shared_lr=1e-3,
    seeds=(0, 1, 2),
    hidden=96,
    layers=3,
)
SMOKE = dict(  # noqa: C408
    sizes={"base": 200, "train": 16, "val": 8, "eval": 16},
    k=8,
    base_steps=40,
    base_batch=32,
    base_lr=3e-3,
    steps=4,
    batch=16,
    grid=(1e-3,),
    shared_lr=1e-3,
    seeds=(0,),
    hidden=32,
    layers=2,
)
MAX_NEW_TOKENS = 48
TEMPERATURE, TOP_P = 0.7, 0.8

_lock = threading.Lock()
_cpu = {"children": 0.0}


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
    """Run a command (its output to ``log``); fail loudly with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [str(c) for c in cmd], env=env(extra_env), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    with _lock:
        _cpu["children"] += usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(
            f"{tail}\nreproduce: `{Path(str(cmd[0])).name} {' '.join(map(str, cmd[1:3]))} ...` failed "
            f"(exit {proc.returncode}); log: {log}"
        )
    return time.monotonic() - start


def swift_sft(
    model: Path,
    data: Path,
    out: Path,
    *,
    loss_type: str | None,
    level: str | None,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
    scheduler: str = "constant",
    warmup: float = 0.0,
) -> Path:
    """`swift sft` from ``model``; returns the saved checkpoint (it holds args.json, so `swift sample` can load it)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        BIN / "swift",
        "sft",
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
        "--learning_rate",
        lr,
        "--lr_scheduler_type",
        scheduler,
        "--warmup_ratio",
        warmup,
        "--max_steps",
        steps,
        "--num_train_epochs",
        "1000",
        "--seed",
        seed,
        "--data_seed",
        seed,
        "--logging_steps",
        max(1, steps // 8),
        "--save_strategy",
        "steps",
        "--save_steps",
        steps,
        "--save_only_model",
        "true",
        "--report_to",
        "none",
        "--output_dir",
        out,
        "--add_version",
        "false",
    ]
    if loss_type:
        cmd += ["--loss_type", loss_type]
    run(cmd, out / "train.log", extra_env={"RIFT_LEVEL": level} if level else None)
    ckpt = out / f"checkpoint-{steps}"
    if not (ckpt / "args.json").exists():
        raise SystemExit(f"reproduce: {ckpt} was not written (log: {out / 'train.log'})")
    return ckpt


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


def buffer_from_samples(samples: Path, problems: Path, work: Path) -> dict:
    """join -> label -> stats -> convert: the user's route from `swift sample`'s output to a training buffer."""
    joined, labelled, buffer = work / "joined.jsonl", work / "labelled.jsonl", work / "buffer.jsonl"
    rift_losses("join", samples, "--problems", problems, "-o", joined, log=work / "join.log")
    rift_losses("label", joined, "-o", labelled, log=work / "label.log")
    table = rift_losses("stats", labelled, log=work / "stats.log")
    rift_losses("stats", labelled, "--json", log=work / "stats.json")
    rift_losses("convert", labelled, "-o", buffer, "--to", "swift", log=work / "convert.log")
    stats = json.loads((work / "stats.json").read_text())
    positives = work / "positives.jsonl"
    with open(labelled) as src, open(positives, "w") as dst:
        for line in src:
            row = json.loads(line)
            if row["reward"] > 0:
                dst.write(json.dumps({"messages": row["messages"]}, ensure_ascii=False) + "\n")
    return {"buffer": buffer, "positives": positives, "stats": stats, "table": table}


def sample_for_eval(models: list[Path], problems: Path, out: Path, *, k: int, seed: int) -> Path:
    """K samples per problem from each model (reproduce/evaluate.py, one process): out/<i>.jsonl."""
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
        ],
        out / "evaluate.log",
    )
    return out


def grade(out: Path, n_models: int, *, k: int) -> list[dict]:
    """`rift-losses label` and `stats --k` of each model's samples (the same functions, in-process).

    Main thread only: math-verify's timeouts use ``signal.alarm``.
    """
    from rift_losses.data import commands
    from rift_losses.data.at_k import at_k

    results = []
    for i in range(n_models):
        labelled = out / f"{i}.labelled.jsonl"
        summary = commands.label(out / f"{i}.jsonl", labelled, progress="none")
        if summary["unlabelled"]:
            raise SystemExit(
                f"reproduce: {summary['unlabelled']} eval samples in {out / f'{i}.jsonl'} could not be graded"
            )
        results.append(at_k(labelled, k=k))
    return results


def summarize(per_seed: list[dict], extra: dict | None = None) -> dict:
    means = [r["mean_at_k"] for r in per_seed]
    passes = [r["pass_at_k"] for r in per_seed]
    out = {
        "mean_at_k": statistics.fmean(means),
        "pass_at_k": statistics.fmean(passes),
        "mean_at_k_sd": statistics.stdev(means) if len(means) > 1 else 0.0,
        "pass_at_k_sd": statistics.stdev(passes) if len(passes) > 1 else 0.0,
        "per_seed": per_seed,
    }
    out.update(extra or {})
    return out


def check_results(results: dict) -> list[str]:
    """What `make test` relies on in results.json: the shape the issue asks for and values in range."""
    required = ("base", *METHODS, "rift_round2")
    problems = [f"methods must include {name!r}" for name in required if name not in results["methods"]]
    n = len(results["config"]["seeds"])
    for group in ("methods", "methods_shared_lr"):
        for name, m in results[group].items():
            for key in ("mean_at_k", "pass_at_k"):
                if not 0.0 <= m[key] <= 1.0:
                    problems.append(f"{group}.{name}.{key} must be in [0, 1], got {m[key]!r}")
                if m[key] > m["pass_at_k"] + 1e-12:
                    problems.append(
                        f"{group}.{name}: mean@k must not exceed pass@k, got {m[key]!r} > {m['pass_at_k']!r}"
                    )
            if len(m["per_seed"]) != n:
                problems.append(f"{group}.{name}.per_seed must have {n} entries, got {len(m['per_seed'])}")
    if results["k"] != results["config"]["k"]:
        problems.append(f"k must be {results['config']['k']}, got {results['k']!r}")
    return problems


def parallel(jobs: int, fn, items: list) -> list:
    if jobs <= 1:
        return [fn(item) for item in items]
    with cf.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(fn, items))


def main(argv: list[str] | None = None) -> int:
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
    k, seeds = cfg["k"], list(cfg["seeds"])
    started = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    say(
        f"reproduce ({'smoke' if args.smoke else 'full'}): K = {k}, seeds {seeds}, LR grid "
        f"{list(cfg['grid'])}, shared LR {cfg['shared_lr']}, "
        f"{cfg['steps']} steps x batch {cfg['batch']} per arm, {args.jobs} jobs -> {out}"
    )

    # 1. data and model
    splits = task.make_splits(cfg["sizes"])
    data = {name: task.write_jsonl(out / "data" / f"{name}.jsonl", rows) for name, rows in splits.items()}
    init = task.build_model(
        out / "init",
        task.corpus_of([r for rows in splits.values() for r in rows]),
        hidden_size=cfg["hidden"],
        num_layers=cfg["layers"],
    )
    say(f"1. data: {', '.join(f'{n} {len(r)}' for n, r in splits.items())} problems; model: {init}")

    # 2. base
    t = time.monotonic()
    base = swift_sft(
        init,
        data["base"],
        out / "base",
        loss_type=None,
        level=None,
        lr=cfg["base_lr"],
        steps=cfg["base_steps"],
        batch=cfg["base_batch"],
        seed=0,
        scheduler="cosine",
        warmup=0.05,
    )
    say(
        f"2. base: swift sft on {len(splits['base'])} reference solutions, {cfg['base_steps']} steps "
        f"({time.monotonic() - t:.0f} s)"
    )

    # 3. buffer
    t = time.monotonic()
    samples = swift_sample(base, data["train"], out / "round1" / "sample", k=k, seed=0, n_problems=len(splits["train"]))
    say(
        f"3. swift sample: {k} answers to each of {len(splits['train'])} train problems from the base "
        f"({time.monotonic() - t:.0f} s)"
    )
    round1 = buffer_from_samples(samples, data["train"], out / "round1")
    say(round1["table"])

    train_data = {"references": data["train"], "positives": round1["positives"], "buffer": round1["buffer"]}

    def train(
        method: str, lr: float, seed: int, *, start: Path = base, datasets: dict = train_data, tag: str = ""
    ) -> Path:
        source, loss_type, level = ARMS[method]
        if datasets[source].stat().st_size == 0:  # e.g. RFT when no sample is correct: nothing to train on
            say(f"   {method}: {datasets[source].name} is empty, so this arm is its starting model")
            return start
        run_dir = out / "runs" / f"{method}{tag}-lr{lr:g}-s{seed}"
        return swift_sft(
            start,
            datasets[source],
            run_dir,
            loss_type=loss_type,
            level=level,
            lr=lr,
            steps=cfg["steps"],
            batch=cfg["batch"],
            seed=seed,
        )

    # 4a. learning rate per method on val (seed 0)
    t = time.monotonic()
    grid_runs = [(m, lr) for m in METHODS for lr in cfg["grid"]]
    ckpts = dict(zip(grid_runs, parallel(args.jobs, lambda ml: train(ml[0], ml[1], seeds[0]), grid_runs)))
    val = grade(
        sample_for_eval([ckpts[r] for r in grid_runs], data["val"], out / "eval" / "val", k=k, seed=seeds[0]),
        len(grid_runs),
        k=k,
    )
    selection = {m: {f"{lr:g}": None for lr in cfg["grid"]} for m in METHODS}
    for (m, lr), res in zip(grid_runs, val):
        selection[m][f"{lr:g}"] = res["mean_at_k"]
    chosen = {m: max(cfg["grid"], key=lambda lr: (selection[m][f"{lr:g}"], -lr)) for m in METHODS}
    say(f"4. learning rates chosen on val (mean@{k}, seed {seeds[0]}; {time.monotonic() - t:.0f} s):")
    for m in METHODS:
        say(
            f"   {m:<14} "
            + "  ".join(f"{lr}: {100 * v:5.1f}%" for lr, v in selection[m].items())
            + f"   -> {chosen[m]:g}"
        )

    # 4b. every method at its chosen LR and at the shared LR, all seeds
    t = time.monotonic()
    wanted = sorted({(m, lr, s) for m in METHODS for lr in (chosen[m], cfg["shared_lr"]) for s in seeds})
    todo = [w for w in wanted if not (w[2] == seeds[0] and (w[0], w[1]) in ckpts)]
    for w, ckpt in zip(todo, parallel(args.jobs, lambda w: train(*w), todo)):
        ckpts[w] = ckpt
    for m, lr in grid_runs:
        ckpts[(m, lr, seeds[0])] = ckpts[(m, lr)]
    say(f"   trained {len(todo)} more runs ({time.monotonic() - t:.0f} s)")

    # 5. round 2: sample from each seed's RIFT model (chosen LR), label, RIFT again
    t = time.monotonic()

    def round2(seed: int) -> tuple[Path, dict]:
        rift_model = ckpts[("rift", chosen["rift"], seed)]
        work = out / "round2" / f"s{seed}"
        smp = swift_sample(rift_model, data["train"], work / "sample", k=k, seed=seed, n_problems=len(splits["train"]))
        buf = buffer_from_samples(smp, data["train"], work)
        return train(
            "rift", chosen["rift"], seed, start=rift_model, datasets={"buffer": buf["buffer"]}, tag="-round2"
        ), buf["stats"]

    r2 = parallel(args.jobs, round2, seeds)
    say(f"5. round 2: swift sample from the RIFT models, label, RIFT again ({time.monotonic() - t:.0f} s)")

    # 6. evaluation on the held-out split: each seed samples with its own sampling seed
    t = time.monotonic()
    per_seed_models = {s: [base] + [ckpts[w] for w in wanted if w[2] == s] + [r2[i][0]] for i, s in enumerate(seeds)}
    names = {s: ["base"] + [w[:2] for w in wanted if w[2] == s] + ["rift_round2"] for s in seeds}
    dirs = parallel(
        args.jobs,
        lambda s: sample_for_eval(per_seed_models[s], data["eval"], out / "eval" / f"s{s}", k=k, seed=s),
        seeds,
    )
    evals = [grade(d, len(per_seed_models[s]), k=k) for d, s in zip(dirs, seeds)]
    by = {}
    for s, results in zip(seeds, evals):
        for name, res in zip(names[s], results):
            by.setdefault(name, []).append({"seed": s, "mean_at_k": res["mean_at_k"], "pass_at_k": res["pass_at_k"]})
    say(
        f"6. evaluated {sum(len(v) for v in per_seed_models.values())} models on {len(splits['eval'])} "
        f"held-out problems x {k} ({time.monotonic() - t:.0f} s)"
    )

    methods = {"base": summarize(by["base"])}
    for m in METHODS:
        methods[m] = summarize(by[(m, chosen[m])], {"lr": chosen[m]})
    methods["rift_round2"] = summarize(by["rift_round2"], {"lr": chosen["rift"]})
    shared = {m: summarize(by[(m, cfg["shared_lr"])], {"lr": cfg["shared_lr"]}) for m in METHODS}
    wall = time.monotonic() - started
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    results = {
        "k": k,
        "methods": methods,
        "methods_shared_lr": shared,
        "shared_lr": cfg["shared_lr"],
        "lr_grid": list(cfg["grid"]),
        "lr_selection_val_mean_at_k": selection,
        "buffer_stats": {"round1": round1["stats"], "round2": [b for _, b in r2]},
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
        "machine": f"{os.cpu_count()} CPU cores"
        + (
            ""
            if not Path("/proc/meminfo").exists()
            else f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB"
        ),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    bad = check_results(results)
    if bad:
        raise SystemExit("reproduce: results.json is malformed: " + "; ".join(bad))
    from report import markdown, plot

    (out / "results.md").write_text(markdown(results))
    plot(results, out / "results.png")
    say("")
    say((out / "results.md").read_text())
    say(
        f"reproduce: done in {wall:.0f} s wall, {results['cpu_seconds']:.0f} s of CPU -> "
        f"{out / 'results.json'}, results.md, results.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
