"""Peak memory (RSS) of one TRL training step on CPU at a wide vocabulary: plain SFT vs RIFT.

Run: ``.venvs/trl/bin/python benchmarks/bench_trl_memory.py [--rows 4 --targets 512 --vocab 151936]``.

Shape: a tiny Qwen2 backbone (hidden 64, 2 layers, float32) with the Qwen2.5 vocabulary
(V = 151936, tied embeddings), ``--rows`` pre-tokenized rows of ``--targets`` + 1 tokens each
(every next token a target: 2048 targets by default), rewards alternating +1.0 / -0.2.
Cases, each in a fresh subprocess:

- ``trl nll``: TRL 1.16's ``SFTTrainer`` with ``loss_type="nll"`` (its fused LM head);
- ``rift (fused head)``: ``RiftSFTTrainer`` with ``loss_type="rift"`` (the same fused log-probs);
- ``rift (rift-losses head)``: the same with TRL's fused head removed, so the loss comes from
  rift-losses' chunked head (``rift_losses.fused_token_logprobs``, ``integrations/_core/fused.py``);
- ``rift (logits path)``: TRL's fused head removed and ``rift_fused_head=False``, so the loss comes
  from the materialized logits through ``rift_losses.token_logprobs`` (in-place gradient on).

The child builds the trainer (model, dataset), runs one warm-up step, resets the kernel's RSS
high-water mark (``/proc/self/clear_refs``), runs one more step and reports ``VmHWM`` (peak)
and the step's rise above the RSS before it (``VmHWM - VmRSS_before``). glibc's mmap threshold
is fixed at 64 KiB so freed tensors leave the resident set (see ``bench_logprobs.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = ("trl nll", "rift (fused head)", "rift (rift-losses head)", "rift (logits path)")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _child(case: str, rows: int, targets: int, vocab: int, workdir: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from rift_dev.tiny_model import build_tokenizer
    from rift_losses.integrations.trl import RiftSFTConfig, RiftSFTTrainer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(Path(workdir) / "tok")
    tokenizer = AutoTokenizer.from_pretrained(str(Path(workdir) / "tok"))
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=targets + 8,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    g = torch.Generator().manual_seed(1)
    data = [
        {
            "input_ids": torch.randint(0, vocab, (targets + 1,), generator=g).tolist(),
            "reward": 1.0 if i % 2 == 0 else -0.2,
        }
        for i in range(rows)
    ]
    for row in data:
        row["labels"] = list(row["input_ids"])
    common = dict(  # noqa: C408 (keyword arguments of the configs below)
        output_dir=str(Path(workdir) / "out"),
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        per_device_train_batch_size=rows,
        max_steps=2,
        logging_steps=1,
        max_length=None,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if case == "trl nll":
        trainer = SFTTrainer(
            model=model, args=SFTConfig(**common), train_dataset=Dataset.from_list(data), processing_class=tokenizer
        )
    else:
        trainer = RiftSFTTrainer(
            model=model,
            args=RiftSFTConfig(loss_type="rift", rift_fused_head=case != "rift (logits path)", **common),
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
        )
        if case in ("rift (rift-losses head)", "rift (logits path)"):
            del trainer.model.forward
    marks = {}

    from transformers import TrainerCallback

    class Marks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # after the warm-up step
                Path("/proc/self/clear_refs").write_text("5")
                marks["before"] = _status("VmRSS")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                marks["peak"] = _status("VmHWM")

    trainer.add_callback(Marks())
    trainer.train()
    return {"case": case, "peak_bytes": marks["peak"], "step_rise_bytes": marks["peak"] - marks["before"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--targets", type=int, default=512, help="target tokens per row")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as workdir:
            print("RESULT " + json.dumps(_child(args.child, args.rows, args.targets, args.vocab, workdir)))
        return
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "RIFT_LOSSES_AUTOLOAD": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
    print(
        f"one training step, CPU, float32, V={args.vocab}, {args.rows} rows x {args.targets} targets "
        f"= {args.rows * args.targets} target tokens"
    )
    print("| case | peak RSS GB | step rise above pre-step RSS GB |\n| --- | --- | --- |")
    results = {}
    for case in CASES:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                case,
                "--rows",
                str(args.rows),
                "--targets",
                str(args.targets),
                "--vocab",
                str(args.vocab),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
        r = json.loads(line[len("RESULT ") :])
        results[case] = r
        print(f"| {case} | {r['peak_bytes'] / 1e9:.2f} | {r['step_rise_bytes'] / 1e9:.2f} |", flush=True)
    base = results["trl nll"]["peak_bytes"]
    for case in CASES[1:]:
        print(f"{case} / trl nll peak: {results[case]['peak_bytes'] / base:.3f}")


if __name__ == "__main__":
    main()
