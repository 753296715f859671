"""Benchmark: cost of running LLaMA-Factory's SFT processor one sample at a time (prints figures).

``RewardCarryingProcessor`` calls the processor per sample so a dropped sample takes its reward
with it. This times LLaMA-Factory's own batched call against the per-sample wrapper on the
same converted examples (the tiny tokenizer; a real one makes tokenization, the shared part,
dearer and the difference relatively smaller).

``.venvs/llamafactory/bin/python benchmarks/bench_lf_processor.py``
"""

import os
import statistics
import sys
import tempfile
import time

N = int(os.environ.get("BENCH_SAMPLES", "2000"))


def main():
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.processor import SupervisedDatasetProcessor
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    from rift_dev.tiny_model import build_tiny_qwen2
    from rift_losses.integrations.llamafactory._data import REWARD_IN, RewardCarryingProcessor

    model = build_tiny_qwen2(os.path.join(tempfile.mkdtemp(), "model"))
    tokenizer_module = load_tokenizer(ModelArguments(model_name_or_path=str(model)))
    data_args = DataArguments(template="qwen", cutoff_len=1024)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    inner = SupervisedDatasetProcessor(template=template, data_args=data_args, **tokenizer_module)
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    batch = {
        "_prompt": [[{"role": "user", "content": f"{i}: {text * 2}"}] for i in range(N)],
        "_response": [[{"role": "assistant", "content": text * 4}] for _ in range(N)],
        "_system": [""] * N,
        "_tools": [""] * N,
        "_images": [None] * N,
        "_videos": [None] * N,
        "_audios": [None] * N,
    }
    wrapped = RewardCarryingProcessor(inner)
    with_rewards = {**batch, REWARD_IN: [1.0] * N}
    timings = {"LLaMA-Factory, batched": [], "per sample (rift-losses)": []}
    for _ in range(3):
        t = time.perf_counter()
        base = inner.preprocess_dataset(batch)
        timings["LLaMA-Factory, batched"].append(time.perf_counter() - t)
        t = time.perf_counter()
        mine = wrapped.preprocess_dataset(with_rewards)
        timings["per sample (rift-losses)"].append(time.perf_counter() - t)
    assert mine["input_ids"] == base["input_ids"] and len(mine["rift_reward"]) == N
    print(
        f"{N} samples, {len(base['input_ids'][0])} tokens each, load average {os.getloadavg()[0]:.2f} "
        f"(median of 3), python {sys.version.split()[0]}"
    )
    for name, values in timings.items():
        print(
            f"  {name}: {statistics.median(values) * 1e3:.0f} ms ({statistics.median(values) / N * 1e6:.0f} us/sample)"
        )


if __name__ == "__main__":
    main()
