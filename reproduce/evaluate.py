"""Sample K answers per problem from one or more `swift sft` checkpoints, in one process.

The engine is MS-Swift's ``TransformersEngine``, the one ``swift sample --sampler_engine
transformers`` drives, with the same request settings (temperature, top-p, max new tokens; each
prompt sent K times, as the sampler does). Running every checkpoint of the reproduction in one
process saves MS-Swift's start-up per model (about 8 s on the 2-core CPU). Writes, per model, a
JSONL of chat rows ``{"messages": [user, assistant=sample], "answer": ...}`` that
``rift-losses label`` grades directly.

Common random numbers: the requests go to the engine in chunks of ``--batch`` (one ``generate``
call each), and chunk ``c`` starts from ``torch.manual_seed(seed * SEED_STRIDE + c)``. PyTorch draws
one sample as ``argmax(p / q)`` with fresh ``q ~ Exp(1)`` per vocabulary entry (``torch.multinomial``,
the Gumbel-max trick), so row r of a chunk gets the same noise at step t whatever the model: every
model's samples are exact draws from its own distribution, and two models' scores on the same
problems and seed are coupled, so their difference has far less sampling noise than two independent
draws. Seeding once per call instead would couple only the first chunk: how many steps a chunk
runs (until all its rows end) depends on the model and shifts the stream for the next.

    python reproduce/evaluate.py --problems eval.jsonl --k 8 --out DIR ckpt1 ckpt2 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def share_prompt_prefill(model, *, k: int) -> None:
    """Make ``model.generate`` compute each prompt's keys and values once, not once per sample.

    The engine sends each prompt ``k`` times in a row; the patched ``generate`` runs the distinct
    prompts (all but their last token) through the model once, repeats that cache ``k`` times and
    hands it to the original ``generate``, which then starts from the last prompt token. The samples
    are the same as without it (checked token for token on this reproduction's models: 512 of 512
    rows equal, greedy and sampled); the prompt, about two thirds of a sample's tokens here, is
    computed once per problem instead of ``k`` times.
    """
    import torch

    generate = model.generate

    def generate_with_shared_prefill(*args, input_ids, attention_mask, **kwargs):
        if "past_key_values" in kwargs or "position_ids" in kwargs:
            raise RuntimeError(f"evaluate: unexpected generate arguments {sorted(kwargs)}")
        ids, mask = input_ids[::k], attention_mask[::k]
        if not (
            input_ids.shape[0] % k == 0
            and torch.equal(ids.repeat_interleave(k, 0), input_ids)
            and torch.equal(mask.repeat_interleave(k, 0), attention_mask)
        ):
            raise RuntimeError(f"evaluate: each prompt must come {k} times in a row to share its prefill")
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: as generate numbers them
        with torch.no_grad():
            cache = model(
                input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True
            ).past_key_values
        cache.batch_repeat_interleave(k)
        return generate(*args, input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)

    model.generate = generate_with_shared_prefill


#: chunk c of sampling seed s starts from torch.manual_seed(s * SEED_STRIDE + c)
SEED_STRIDE = 100_003


def sample_rows(
    engine,
    problems: list[dict],
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch: int,
) -> list[dict]:
    """K sampled answers per problem, as chat rows carrying the problem's reference answer.

    ``batch`` requests per ``generate`` call, each call seeded on its own (common random numbers:
    see the module's docstring).
    """
    import torch
    from swift.infer_engine import InferRequest, RequestConfig

    requests = []
    for row in problems:
        prompt = [m for m in row["messages"] if m["role"] != "assistant"]
        requests.extend(InferRequest(messages=prompt) for _ in range(k))
    config = RequestConfig(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    responses = []
    for chunk, start in enumerate(range(0, len(requests), batch)):
        torch.manual_seed(seed * SEED_STRIDE + chunk)
        responses += engine.infer(requests[start : start + batch], request_config=config, use_tqdm=False)
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
        "--no-shared-prefill",
        action="store_true",
        help="compute every sample's prompt on its own (slower; the samples are the same)",
    )
    parser.add_argument(
        "--first-index", type=int, default=0, help="number the outputs from this index (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    from swift.infer_engine import TransformersEngine

    if args.batch % args.k:
        parser.error(f"--batch ({args.batch}) must be a multiple of --k ({args.k}): a chunk holds whole problems")
    problems = [json.loads(line) for line in args.problems.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(args.models):
        engine = TransformersEngine(str(model), max_batch_size=args.batch)
        if not args.no_shared_prefill:
            share_prompt_prefill(engine.model, k=args.k)
        rows = sample_rows(
            engine,
            problems,
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            batch=args.batch,
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
