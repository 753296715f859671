"""Host-level memory on CPU: peak RSS of one real training step, plain SFT against RIFT, per host.

Run: ``make bench-hosts`` (needs ``make venvs``; about 10 minutes and 11 GB of free memory on a
2-core machine; run it with nothing else heavy running).

Each host (``benchmarks/hosts.py``: MS-Swift's ``swift sft``, TRL's ``trl sft``, LLaMA-Factory's
``llamafactory-cli train``) trains a tiny Qwen2 backbone (hidden 32, 2 layers) with a wide
vocabulary (V = 151936, the Qwen2.5 vocabulary) in float32 for one optimizer step of 8 samples x
(64 prompt + 512 response tokens): about 4096 target tokens, so the logits are about 2.8 GB.
Runs, each a fresh CLI process:

- ``baseline``: the host's plain SFT on one short row (the loaded model, optimizer and framework);
- ``plain``: the host's own loss (cross-entropy) on the 8 samples;
- ``rift fused``: ``--loss_type rift`` / ``use_rift_loss: true`` / ``loss_type: rift`` (the default: the
  fused LM head, the logits never built; TRL uses its own fused head, see ``bench_trl_memory.py``);
- ``rift in place``: the same with ``RIFT_FUSED_HEAD=0`` / ``rift_fused_head: false`` (logits built,
  their gradient written over them);
- ``rift, not in place``: the logits path with ``RIFT_INPLACE_GRAD=0`` / ``rift_inplace_grad: false``.

Liger-Kernel is not measured here: its kernels are Triton GPU kernels (no CPU path); ``make gpu-check``
measures its fused linear cross-entropy against the fused head on CUDA.

Peak RSS is the training process's high-water mark (``ru_maxrss``; glibc's mmap threshold at 64 KiB
so freed tensors leave the resident set). Reported: each run's peak above the baseline's, and RIFT
over plain, and the step time over plain SFT's (the fused head's price: one more matmul of the head in
backward). Target (issue 23): RIFT fused's peak above the loaded model at most 0.15x plain SFT's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hosts  # noqa: E402

TINY_WIDE = hosts.Shape(vocab=151936, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, dtype="float32")
#: (label, mode, logits gradient in place, fused LM head)
RUNS = (
    ("baseline", "baseline", True, False),
    ("plain", "plain", True, False),
    ("rift fused", "rift", True, True),
    ("rift in place", "rift", True, False),
    ("rift, not in place", "rift", False, False),
)
#: Targets (issue 23): the fused head's peak above the loaded model at most this fraction of plain SFT's
TARGET = 0.15


def measure(
    work: Path, host_names, *, rows=8, prompt_tokens=64, response_tokens=512, shape=TINY_WIDE, runs=RUNS
) -> dict:
    model = hosts.build_model(work / "model", shape)
    results = {}
    for name in host_names:
        host = hosts.HOSTS[name]
        data = hosts.write_host_data(
            host, work / f"data-{name}", model, rows=rows, prompt_tokens=prompt_tokens, response_tokens=response_tokens
        )
        results[name] = {}
        for label, mode, inplace, fused in runs:
            job = hosts.Job(
                mode=mode,
                model=model,
                data=data,
                out=work / f"{name}-{label.replace(', ', '-').replace(' ', '_')}",
                batch=rows,
                max_length=prompt_tokens + response_tokens + 128,
                steps=1,
                bf16=False,
                inplace_grad=inplace,
                fused_head=fused,
            )
            r = hosts.run(host, job)
            results[name][label] = {"peak_rss_bytes": r["maxrss_bytes"], "step": r["steps"][0]}
            print(
                f"  {name:<13} {label:<19} peak RSS {r['maxrss_bytes'] / 1e9:6.2f} GB  "
                f"batch {r['steps'][0]['input_shape']}, {r['steps'][0]['target_tokens']} target tokens",
                flush=True,
            )
    return results


def table(results: dict) -> tuple[str, bool]:
    lines = [
        "| host | baseline (loaded model) GB | plain SFT above GB | RIFT fused above GB | fused / plain | "
        "RIFT in place above GB | in place / plain | RIFT not in place above GB | not in place / plain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ok = True
    for name, runs in results.items():
        base = runs["baseline"]["peak_rss_bytes"]
        above = {k: (v["peak_rss_bytes"] - base) / 1e9 for k, v in runs.items()}
        ratio = {k: above[k] / above["plain"] for k in above}
        ok &= ratio.get("rift fused", float("inf")) <= TARGET

        def cell(key, values):
            return f"{values[key]:.2f}" if key in values else "not run"

        lines.append(
            f"| {name} | {base / 1e9:.2f} | {above['plain']:.2f} | {cell('rift fused', above)} | "
            f"{cell('rift fused', ratio)} | {cell('rift in place', above)} | {cell('rift in place', ratio)} | "
            f"{cell('rift, not in place', above)} | {cell('rift, not in place', ratio)} |"
        )
    lines += [
        "",
        "| host | step s plain | step s RIFT fused | fused / plain | step s RIFT in place | in place / plain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        sec = {k: v["step"].get("seconds") for k, v in runs.items()}
        if all(sec.get(k) for k in ("plain", "rift fused", "rift in place")):
            lines.append(
                f"| {name} | {sec['plain']:.2f} | {sec['rift fused']:.2f} | {sec['rift fused'] / sec['plain']:.2f} | "
                f"{sec['rift in place']:.2f} | {sec['rift in place'] / sec['plain']:.2f} |"
            )
    return "\n".join(lines), ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", default=",".join(hosts.HOSTS), help=f"comma-separated of {', '.join(hosts.HOSTS)}")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    labels = [label for label, *_ in RUNS]
    p.add_argument("--runs", default=",".join(labels), help=f"comma-separated of {', '.join(labels)}")
    args = p.parse_args(argv)
    names = args.hosts.split(",")
    for name in names:
        if name not in hosts.HOSTS:
            raise SystemExit(f"--hosts must name hosts among {', '.join(hosts.HOSTS)}, got {name!r}")
    runs = [r for r in RUNS if r[0] in args.runs.split(",")]
    if len(runs) != len(args.runs.split(",")) or not {"baseline", "plain"} <= {r[0] for r in runs}:
        raise SystemExit(
            f"--runs must name runs among {', '.join(labels)} including baseline and plain, got {args.runs!r}"
        )
    import torch
    from bench_logprobs import load_line, machine_line  # the machine and load lines of `make bench`

    print("rift-losses: host-level peak RSS of one training step, plain SFT vs RIFT (float32, V = 151936)")
    print(
        f"machine: {machine_line(torch.device('cpu'))}; total memory "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; load before {load_line()}"
    )
    with tempfile.TemporaryDirectory(prefix="rift-bench-hosts-") as tmp:
        results = measure(Path(args.work or tmp), names, runs=runs)
    print(f"load after {load_line()}\n")
    text, ok = table(results)
    print(text)
    print(
        f"\ntarget: RIFT fused's peak above the loaded model <= {TARGET}x plain SFT's in every host: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
