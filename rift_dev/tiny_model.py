"""A tiny Qwen2-shaped model and tokenizer built locally, for tests, the demo and ``reproduce/``.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a small corpus
with Qwen's chat special tokens, and the model is a randomly initialised ``Qwen2ForCausalLM``.
Needs ``transformers`` and ``tokenizers`` (both come with every host framework).

MS-Swift loads it with ``--model_type qwen2 --template qwen --check_model false``;
LLaMA-Factory with ``template: qwen``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: Qwen's chat layout; only tools that render the tokenizer's own template use it (MS-Swift and
#: LLaMA-Factory use their ``qwen`` template, TRL the tokenizer's).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

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

#: The default training text of :func:`build_tokenizer`.
DEFAULT_CORPUS = tuple(_CORPUS.splitlines() * 4)


def build_tokenizer(
    path: str | os.PathLike,
    *,
    corpus=DEFAULT_CORPUS,
    vocab_size: int = 400,
    individual_digits: bool = False,
):
    """Train a byte-level BPE tokenizer with Qwen's special tokens on ``corpus``; save it to ``path``.

    ``individual_digits=True`` makes every digit its own token (arithmetic tasks).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if individual_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return fast


def build_tiny_qwen2(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    corpus=DEFAULT_CORPUS,
    vocab_size: int = 400,
    individual_digits: bool = False,
) -> Path:
    """Create a random ``Qwen2ForCausalLM`` (tied embeddings) and its tokenizer in directory ``path``.

    ``intermediate_size`` defaults to ``2 * hidden_size``. Idempotent: a directory that already
    holds a complete model built with the same options is left as is. Returns the directory.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    options = {
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "max_position_embeddings": max_position_embeddings,
        "vocab_size": vocab_size,
        "individual_digits": individual_digits,
        "corpus_lines": len(corpus),
    }
    marker = path / "rift_tiny_model.json"
    if marker.exists() and json.loads(marker.read_text()) == options:
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path, corpus=corpus, vocab_size=vocab_size, individual_digits=individual_digits)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=options["intermediate_size"],
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(str(path))
    marker.write_text(json.dumps(options))
    return path
