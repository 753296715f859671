"""One training step through each host's real CLI: plain SFT (the host's own loss) and RIFT.

Shared by ``benchmarks/host_memory.py`` (CPU: peak RSS) and ``benchmarks/gpu_check.py`` (CUDA:
step time and peak GPU memory). A host is one entry of :data:`HOSTS`: the virtual environment
it runs from and how to write its command for a :class:`Job`. Adding a host is one more entry,
nothing else.

Every run is a subprocess of the host's CLI, offline, on a model and data built here
(:func:`build_model`, :func:`write_data`), with the Python that :func:`find_runtime` finds for the
host (a :class:`Runtime`): the host's venv (``make venvs``) if there is one, else a folder of the
host's packages installed with ``pip install --target gpu_site/<host>`` (``make gpu-wheels``) on
the running Python's ``sys.path``, else the running Python itself if it imports the host.
The checkout is put on every run's ``PYTHONPATH`` (rift-losses is used from it, not installed), and
so is ``benchmarks/probe``: its ``sitecustomize`` records each ``Trainer.training_step`` (time, batch
shape, target tokens; on CUDA the peak allocated memory). The process tree's peak resident set
size is the largest ``ru_maxrss`` among the processes it waited for (read by a small wrapper
process around the CLI), i.e. the peak RSS of the training process.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE_DIR = Path(__file__).resolve().parent / "probe"
MODES = ("plain", "rift")


@dataclass(frozen=True)
class Shape:
    """A Qwen2 model shape (random weights; the tiny tokenizer only uses the first few hundred ids)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    dtype: str  # "float32" | "bfloat16"


#: Qwen2.5-1.5B (config.json of Qwen/Qwen2.5-1.5B-Instruct), for the GPU step.
QWEN25_1_5B = Shape(vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, dtype="bfloat16")


@dataclass(frozen=True)
class Job:
    """One run: ``mode`` "plain" or "rift" (or "baseline": plain on one short row)."""

    mode: str
    model: Path
    data: Path
    out: Path
    batch: int
    max_length: int
    steps: int
    bf16: bool
    gradient_checkpointing: bool = True
    cpu: bool = True
    #: RIFT only: the logits gradient in place (the adapters' default) or in its own buffer
    inplace_grad: bool = True
    #: RIFT only: the fused LM head (the adapters' default; logits never built) or the logits path
    fused_head: bool = True
    env: dict = field(default_factory=dict)


def _swift(job: Job, cli: list[str]) -> list[str]:
    dataset = job.data / ("rift.jsonl" if job.mode == "rift" else "plain.jsonl")
    if job.mode == "baseline":
        dataset = job.data / "short.jsonl"
    cmd = [
        *cli,
        "sft",
        "--model",
        str(job.model),
        "--model_type",
        "qwen2",
        "--template",
        "qwen",
        "--check_model",
        "false",
        "--torch_dtype",
        "bfloat16" if job.bf16 else "float32",
        "--dataset",
        str(dataset),
        "--split_dataset_ratio",
        "0",
        "--tuner_type",
        "full",
        "--max_length",
        str(job.max_length),
        "--truncation_strategy",
        "delete",
        "--per_device_train_batch_size",
        str(job.batch),
        "--gradient_accumulation_steps",
        "1",
        "--max_steps",
        str(job.steps),
        "--gradient_checkpointing",
        str(job.gradient_checkpointing).lower(),
        "--learning_rate",
        "1e-5",
        "--lr_scheduler_type",
        "constant",
        "--warmup_ratio",
        "0",
        "--dataloader_num_workers",
        "0",
        "--dataset_num_proc",
        "1",
        "--report_to",
        "none",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--add_version",
        "false",
        "--output_dir",
        str(job.out),
        "--seed",
        "0",
    ]
    if job.mode == "rift":
        cmd += ["--loss_type", "rift"]
    return cmd


def _swift_env(job: Job) -> dict:
    if job.mode != "rift":
        return {}
    return {"RIFT_INPLACE_GRAD": "1" if job.inplace_grad else "0", "RIFT_FUSED_HEAD": "1" if job.fused_head else "0"}


def _llamafactory(job: Job, cli: list[str]) -> list[str]:
    config = {
        "model_name_or_path": str(job.model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "template": "qwen",
        "dataset": {"rift": "bench_rift", "plain": "bench_plain", "baseline": "bench_short"}[job.mode],
        "dataset_dir": str(job.data),
        "cutoff_len": job.max_length,
        "preprocessing_num_workers": 1,
        "output_dir": str(job.out),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": job.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-5,
        "max_steps": job.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_shuffling": True,
        "seed": 0,
        "disable_gradient_checkpointing": not job.gradient_checkpointing,
        "bf16": job.bf16,
    }
    if job.mode == "rift":
        config.update(use_rift_loss=True, rift_inplace_grad=job.inplace_grad, rift_fused_head=job.fused_head)
    job.out.mkdir(parents=True, exist_ok=True)
    path = job.out.parent / f"{job.out.name}.yaml"  # JSON is YAML (LLaMA-Factory's .json route is broken in 0.9.5)
    path.write_text(json.dumps(config))
    return [*cli, "train", str(path)]


def _trl(job: Job, cli: list[str]) -> list[str]:
    # `dataset_name` loads every data file of a folder: each run gets a folder with its one file.
    name = {"rift": "rift.jsonl", "plain": "plain.jsonl", "baseline": "short.jsonl"}[job.mode]
    data_dir = job.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "train.jsonl").write_text((job.data / name).read_text())
    config = {
        "model_name_or_path": str(job.model),
        "dataset_name": str(data_dir),
        "output_dir": str(job.out),
        "max_length": job.max_length,
        "per_device_train_batch_size": job.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-5,
        "lr_scheduler_type": "constant",
        "max_steps": job.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "train_sampling_strategy": "sequential",
        "dataloader_num_workers": 0,
        "gradient_checkpointing": job.gradient_checkpointing,
        "bf16": job.bf16,
        "use_cpu": job.cpu,
        "disable_tqdm": True,
    }
    if job.mode == "rift":
        config.update(loss_type="rift", rift_inplace_grad=job.inplace_grad, rift_fused_head=job.fused_head)
    path = job.out.parent / f"{job.out.name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return [*cli, "sft", "--config", str(path)]


@dataclass(frozen=True)
class Host:
    name: str
    venv: Path
    command: object  # (Job, cli: the argv that starts the host's console script) -> argv
    env: object = None  # (Job) -> extra environment, or None
    #: the console script the command starts, the distribution that ships it, and a module whose
    #: import proves the host can train (it imports the host's trainer and ``datasets``)
    script: str = ""
    dist: str = ""
    module: str = ""

    def python(self) -> Path:
        return self.venv / "bin" / "python"


#: The hosts, in report order. TRL's plain SFT is its own ``loss_type: nll`` (its fused LM head).
HOSTS = {
    "ms-swift": Host(
        "ms-swift", ROOT / ".venvs" / "swift", _swift, _swift_env, "swift", "ms-swift", "swift.pipelines.train.sft"
    ),
    "llamafactory": Host(
        "llamafactory",
        ROOT / ".venvs" / "llamafactory",
        _llamafactory,
        script="llamafactory-cli",
        dist="llamafactory",
        module="llamafactory.train.tuner",
    ),
    "trl": Host("trl", ROOT / ".venvs" / "trl", _trl, script="trl", dist="trl", module="trl.scripts.sft"),
}

#: Where :func:`find_runtime` looks: ``<VENVS>/<venv name>`` and ``<SITE>/<host name>``.
VENVS = ROOT / ".venvs"
SITE = ROOT / "gpu_site"
ROUTES = ("venv", "site", "current")

# Runs a console script from its entry point (what pip writes into a venv's bin/, which a
# `pip install --target` folder on PYTHONPATH cannot provide): python -c RUN_SCRIPT NAME ARGS...
_RUN_SCRIPT = (
    "import sys; from importlib.metadata import entry_points; name = sys.argv[1]; "
    "(ep,) = entry_points(group='console_scripts', name=name); sys.argv = [name, *sys.argv[2:]]; "
    "sys.exit(ep.load()())"
)

# Imports the host's module and prints the versions that run it.
_VERSIONS = textwrap.dedent(
    """
    import importlib, importlib.metadata as md, json, platform, sys
    module, dist = sys.argv[1], sys.argv[2]
    importlib.import_module(module)
    out = {"python_version": platform.python_version()}
    for name in ("torch", "triton", "transformers"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError as exc:
            out[name] = f"not importable ({exc})"
    out[dist] = md.version(dist)
    print("RIFT_RUNTIME " + json.dumps(out))
    """
)


class HostUnavailable(RuntimeError):
    """No Python here can run the host (the message says what was tried and why each failed)."""


def _pythonpath(*front, inherit: bool = True) -> str:
    parts = [str(p) for p in front]
    if inherit and os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


@dataclass(frozen=True)
class Runtime:
    """The Python that runs a host: ``route`` (one of :data:`ROUTES`), its executable, the folders
    put in front of its ``sys.path`` (besides the checkout), and the versions it imports."""

    host: str
    route: str
    python: str
    paths: tuple = ()
    versions: dict = field(default_factory=dict)

    def cli(self, script: str) -> list[str]:
        """The argv that starts the console script ``script``."""
        if self.route == "venv":
            return [str(Path(self.python).parent / script)]
        return [self.python, "-c", _RUN_SCRIPT, script]

    def pythonpath(self, *front) -> str:
        """``PYTHONPATH`` of a run: ``front``, the checkout, the route's folders; outside a venv also the
        caller's ``PYTHONPATH`` (where a node may keep its base packages)."""
        return _pythonpath(*front, ROOT, *self.paths, inherit=self.route != "venv")

    def describe(self) -> dict:
        return {"route": self.route, "python": self.python, "site": list(map(str, self.paths)), **self.versions}


def _probe(host: Host, route: str, python: str, paths=()) -> Runtime:
    runtime = Runtime(host.name, route, str(python), tuple(paths))
    proc = subprocess.run(
        [runtime.python, "-c", _VERSIONS, host.module, host.dist],
        capture_output=True,
        text=True,
        env=offline_env(PYTHONPATH=runtime.pythonpath()),
        timeout=300,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RIFT_RUNTIME ")]
    if proc.returncode != 0 or not line:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise HostUnavailable(f"{route} {python}{' + ' + ', '.join(map(str, paths)) if paths else ''}: {last}")
    return Runtime(host.name, route, str(python), tuple(paths), json.loads(line[-1].split(" ", 1)[1]))


@functools.cache  # one import probe per host and process
def find_runtime(host: Host, *, venvs: Path | None = VENVS, site: Path | None = SITE, python=sys.executable) -> Runtime:
    """The first Python that imports ``host``: its venv ``venvs/<venv name>`` (if it exists), else
    ``python`` with ``site/<host name>`` in front of its ``sys.path`` (if that folder exists), else
    ``python`` alone. Raises :class:`HostUnavailable` naming every route tried and why it failed."""
    tried = []
    candidates = []
    if venvs is not None and (Path(venvs) / host.venv.name / "bin" / "python").exists():
        candidates.append(("venv", Path(venvs) / host.venv.name / "bin" / "python", ()))
    if site is not None and (Path(site) / host.name).is_dir():
        candidates.append(("site", python, (Path(site) / host.name,)))
    candidates.append(("current", python, ()))
    for route, exe, paths in candidates:
        try:
            return _probe(host, route, exe, paths)
        except HostUnavailable as exc:
            tried.append(str(exc))
    where = []  # the routes that had no candidate
    if venvs is None or not (Path(venvs) / host.venv.name / "bin" / "python").exists():
        where.append("venvs not searched" if venvs is None else f"no {Path(venvs) / host.venv.name}")
    if site is not None and not (Path(site) / host.name).is_dir():
        where.append(f"no {Path(site) / host.name}")
    raise HostUnavailable(
        f"no Python here imports {host.module} ({'; '.join(where) or 'every route exists'}); tried: "
        + " | ".join(tried)
    )


# ------------------------------------------------------------------------------ model and data


def build_model(path: Path, shape: Shape, *, python: str = sys.executable, device: str = "cpu") -> Path:
    """A random ``Qwen2ForCausalLM`` of ``shape`` with rift-losses' tiny tokenizer, saved to ``path``.

    Built in a subprocess of ``python`` (weights initialised on ``device``: a 1.5B model initialises in
    seconds on a GPU); idempotent.
    """
    marker = path / "rift_bench_model.json"
    if marker.exists() and json.loads(marker.read_text()) == shape.__dict__:
        return path
    code = textwrap.dedent(
        f"""
        import json, torch
        from pathlib import Path
        from transformers import Qwen2Config, Qwen2ForCausalLM
        from rift_dev.tiny_model import build_tokenizer
        s = json.loads({json.dumps(json.dumps(shape.__dict__))})
        path = Path({str(path)!r}); path.mkdir(parents=True, exist_ok=True)
        tok = build_tokenizer(path)
        config = Qwen2Config(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
            max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
            torch_dtype=s["dtype"])
        torch.manual_seed(0)
        with torch.device({device!r}):
            model = Qwen2ForCausalLM(config).to(getattr(torch, s["dtype"]))
        model.save_pretrained(str(path))
        (path / "rift_bench_model.json").write_text(json.dumps(s))
        """
    )
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=offline_env(PYTHONPATH=_pythonpath(ROOT))
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the {shape} model failed:\n{proc.stderr[-3000:]}")
    return path


def _text(tokenizer, n: int) -> str:
    """Text of exactly ``n`` tokens for ``tokenizer``: single digits and spaces, one token each with the
    tiny tokenizer whatever the transformers version (multi-digit numbers merge differently across versions)."""
    words = " ".join(str(i % 10) for i in range(2 * n + 8))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:n]
    text = tokenizer.decode(ids)
    if len(tokenizer(text, add_special_tokens=False)["input_ids"]) != n:
        raise RuntimeError(f"could not write a text of {n} tokens")
    return text


def write_data(path: Path, model: Path, *, rows: int, prompt_tokens: int, response_tokens: int) -> Path:
    """The benchmark's datasets in ``path``, for every host: ``rows`` samples with a prompt of
    ``prompt_tokens`` and a response of ``response_tokens`` tokens (rewards alternating +1.0 / -0.2),
    the same without rewards (plain), and one short row (baseline); ``dataset_info.json`` for
    LLaMA-Factory."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    path.mkdir(parents=True, exist_ok=True)
    prompt, response = _text(tokenizer, prompt_tokens), _text(tokenizer, response_tokens)
    samples = [(prompt, response, 1.0 if i % 2 == 0 else -0.2) for i in range(rows)]
    short = [("What is 2 + 3?", "The answer is 5.", 1.0)]
    for name, items, reward in (("rift", samples, True), ("plain", samples, False), ("short", short, False)):
        with open(path / f"{name}.jsonl", "w") as f:
            for p, r, w in items:
                row = {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                if reward:
                    row["reward"] = w
                f.write(json.dumps(row) + "\n")
        alpaca = [{"instruction": p, "output": r, **({"reward": w} if reward else {})} for p, r, w in items]
        (path / f"{name}.json").write_text(json.dumps(alpaca))
    columns = {"prompt": "instruction", "response": "output"}
    info = {
        "bench_rift": {"file_name": "rift.json", "columns": {**columns, "reward": "reward"}},
        "bench_plain": {"file_name": "plain.json", "columns": columns},
        "bench_short": {"file_name": "short.json", "columns": columns},
    }
    (path / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return path


def write_host_data(host: Host, path: Path, model: Path, *, runtime: Runtime | None = None, **sizes) -> Path:
    """:func:`write_data` run by ``host``'s own Python (``runtime``, default :func:`find_runtime`): token
    counts are those of the host's tokenizer (the same tokenizer files split text differently under
    different transformers versions)."""
    runtime = runtime or find_runtime(host)
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import hosts; "
        f"from pathlib import Path; hosts.write_data(Path({str(path)!r}), Path({str(model)!r}), **{sizes!r})"
    )
    proc = subprocess.run(
        [runtime.python, "-c", code], capture_output=True, text=True, env=offline_env(PYTHONPATH=runtime.pythonpath())
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{host.name}: writing the benchmark data failed:\n{proc.stderr[-3000:]}")
    return path


# ------------------------------------------------------------------------------------ running


def offline_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RIFT_") and k not in ("NPROC_PER_NODE", "NNODES", "FORCE_TORCHRUN", "PYTHONPATH")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


_WRAPPER = textwrap.dedent(
    """
    import json, resource, subprocess, sys
    rc = subprocess.run(sys.argv[1:]).returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print("RIFT_BENCH_MAXRSS " + json.dumps({"rc": rc, "maxrss_kib": peak}))
    """
)


def run(host: Host, job: Job, *, timeout: int = 900, runtime: Runtime | None = None) -> dict:
    """Run ``job`` through ``host``'s CLI with ``runtime`` (default :func:`find_runtime`); its probe
    records and peak RSS. Raises on any failure."""
    runtime = runtime or find_runtime(host)
    job.out.mkdir(parents=True, exist_ok=True)
    probe = job.out / "probe"
    for old in job.out.glob("probe.*.json"):
        old.unlink()
    extra = dict(job.env)
    if host.env is not None:
        extra.update(host.env(job))
    extra.update(
        # the probe, then this checkout (the venvs' editable install may point at another one)
        PYTHONPATH=runtime.pythonpath(PROBE_DIR),
        RIFT_BENCH_PROBE=str(probe),
        MODELSCOPE_CACHE=str(job.out.parent / "ms_cache"),
        HF_HOME=str(job.out.parent / "hf"),
    )
    if job.cpu:  # CPU tensors are host memory: freed ones must leave the resident set
        extra.update(CUDA_VISIBLE_DEVICES="", MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [runtime.python, "-c", _WRAPPER, *host.command(job, runtime.cli(host.script))]
    proc = subprocess.run(
        cmd, env=offline_env(**extra), cwd=job.out.parent, capture_output=True, text=True, timeout=timeout
    )
    (job.out.parent / f"{job.out.name}.log").write_text(proc.stdout + proc.stderr)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RIFT_BENCH_MAXRSS ")]
    if proc.returncode != 0 or not line or json.loads(line[-1].split(" ", 1)[1])["rc"] != 0:
        raise RuntimeError(
            f"{host.name} {job.mode}: the run failed (log {job.out.parent / (job.out.name + '.log')}):\n"
            f"{(proc.stdout + proc.stderr)[-4000:]}"
        )
    records = [json.loads(p.read_text())["steps"] for p in job.out.glob("probe.*.json")]
    records = [r for r in records if r]
    if len(records) != 1 or len(records[0]) != job.steps:
        raise RuntimeError(
            f"{host.name} {job.mode}: expected one process with {job.steps} probed training steps, "
            f"got {[len(r) for r in records]} (log {job.out.parent / (job.out.name + '.log')})"
        )
    return {"maxrss_bytes": json.loads(line[-1].split(" ", 1)[1])["maxrss_kib"] * 1024, "steps": records[0]}
