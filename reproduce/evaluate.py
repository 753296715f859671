"""Sample K answers per problem from one or more `swift sft` checkpoints, in one process.

The engine is MS-Swift's ``TransformersEngine``, the one ``swift sample --sampler_engine
transformers`` drives, with the same request settings (temperature, top-p, max new tokens; each
prompt sent K times, as the sampler does). Running every checkpoint of the reproduction in one
process saves MS-Swift's start-up per model (about 8 s on the 2-core CPU). Writes, per model, a
JSONL of chat rows ``{"messages": [user, assistant=sample], "answer": ...}`` that
``rift-losses label`` grades directly.

    python reproduce/evaluate.py --problems eval.jsonl --k 8 --out DIR ckpt1 ckpt2 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def sample_rows(
    engine, problems: list[dict], *, k: int, temperature: float, top_p: float, max_new_tokens: int, seed: int
) -> list[dict]:
    """K sampled answers per problem, as chat rows carrying the problem's reference answer."""
    import torch
    from swift.infer_engine import InferRequest, RequestConfig

    requests = []
    for row in problems:
        prompt = [m for m in row["messages"] if m["role"] != "assistant"]
        requests.extend(InferRequest(messages=prompt) for _ in range(k))
    config = RequestConfig(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    torch.manual_seed(seed)
    responses = engine.infer(requests, request_config=config, use_tqdm=False)
    out = []
    for i, row in enumerate(problems):
        prompt = [m for m in row["messages"] if m["role"] != "assistant"]
        for resp in responses[i * k : (i + 1) * k]:
            if isinstance(resp, Exception):
                raise resp
            out.append(
                {
                    "messages": prompt + [{"role": "assistant", "content": resp.choices[0].message.content}],
                    "answer": row["answer"],
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models", nargs="+", type=Path, help="checkpoint directories written by `swift sft` (they hold args.json)"
    )
    parser.add_argument(
        "--problems", type=Path, required=True, help="JSONL rows {'messages': [user, (assistant)], 'answer': ...}"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="one JSONL per model: OUT/<first-index + i>.jsonl, in the order given"
    )
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch", type=int, default=512, help="requests per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--first-index", type=int, default=0, help="number the outputs from this index (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    from swift.infer_engine import TransformersEngine

    problems = [json.loads(line) for line in args.problems.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(args.models):
        engine = TransformersEngine(str(model), max_batch_size=args.batch)
        rows = sample_rows(
            engine,
            problems,
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        path = args.out / f"{args.first_index + i}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"evaluate: {model} -> {path} ({len(rows)} samples)", flush=True)
        del engine
    return 0


if __name__ == "__main__":
    sys.exit(main())
