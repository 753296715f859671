"""A tiny Qwen2-shaped model and tokenizer built locally, for tests and the offline demo.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a small corpus
with Qwen's chat special tokens, and the model is a randomly initialised ``Qwen2ForCausalLM``
of a few hundred thousand parameters. Needs ``transformers`` and ``tokenizers`` (both come
with either host framework); importing :mod:`rift_losses` does not import this module.

MS-Swift loads it with ``--model_type qwen2 --template qwen --check_model false``;
LLaMA-Factory with ``template: qwen``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_CORPUS = """\
system user assistant You are a helpful assistant.
Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.
How many clips did Natalia sell altogether in April and May? The answer is 72.
Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.
How much did she earn? She earned 10 dollars. The final answer is \\boxed{10}.
Solve step by step. First, add the numbers. Then multiply. So the result is 3/4, or 0.75.
0 1 2 3 4 5 6 7 8 9 10 11 12 24 36 48 60 72 100 + - * / = ( ) . , ? ! : ; \\frac{1}{2} \\boxed{}
The quick brown fox jumps over the lazy dog. Therefore, the answer is wrong. Let me check again.
"""


def build_tokenizer(path: str | os.PathLike, *, vocab_size: int = 400):
    """Train a tiny byte-level BPE tokenizer with Qwen's special tokens and save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = (
        "{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    fast.save_pretrained(str(path))
    return fast


def build_tiny_qwen2(path: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> Path:
    """Create a tiny random ``Qwen2ForCausalLM`` and its tokenizer in directory ``path``.

    Idempotent: an existing complete directory is left as is. Returns the directory.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    marker = path / "rift_tiny_model.json"
    if marker.exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(str(path))
    marker.write_text(json.dumps({"seed": seed, "hidden_size": hidden_size, "num_layers": num_layers}))
    return path


#: What a process prints when C++ ``std::terminate`` runs on a joinable thread at exit.
EXIT_ABORT = "terminate called without an active exception"


def run_command(cmd, **kwargs):
    """``subprocess.run(cmd, **kwargs)``, run once more if it died of the exit-time abort above.

    Multi-process CPU runs over gloo (torchrun, accelerate, DeepSpeed) with torch 2.13 sometimes
    abort with :data:`EXIT_ABORT` (SIGABRT) while tearing down, after their work is done (seen in
    2 of about 15 such runs of one ``make test``; the same runs pass when repeated). Only that
    signature is retried, once, and the retry's result is what the test checks: a run that fails
    any other way, or aborts twice, still fails. ``kwargs`` must capture the output (``capture_output``
    or ``stdout``/``stderr`` pipes) for the signature to be seen.
    """
    import subprocess
    import sys

    done = subprocess.run(cmd, **kwargs)
    output = (done.stdout or "") + (done.stderr or "") if isinstance(done.stdout or "", str) else ""
    if done.returncode != 0 and EXIT_ABORT in output:
        print(f"rift_losses.testing: {EXIT_ABORT!r} (exit {done.returncode}); running once more", file=sys.stderr)
        done = subprocess.run(cmd, **kwargs)
    return done
