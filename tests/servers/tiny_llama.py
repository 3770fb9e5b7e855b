"""Build a tiny, randomly initialised Llama that vLLM can serve, without any model hub.

Why: the tests need a real vLLM replica (OpenAI API, SSE streaming, vLLM's own metrics)
but must not download weights, and a 2-core machine must start several replicas. A
2-layer, 128-wide Llama loads in seconds; its text is gibberish but greedy decoding
(temperature 0) is deterministic, which is all a chaos test needs to compare answers.

Shape constraints found by running vLLM's CPU backend: head_dim must be one it supports
(64 works; 16 is refused with "Unsupported CPU attention configuration"), hence hidden 128
with 2 heads.

Runs in `.venv-vllm`'s python (it needs torch, transformers and tokenizers):

    .venv-vllm/bin/python tests/servers/tiny_llama.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED = 0
MAX_LEN = 256
#: Written last: a directory without it is an interrupted build and is rebuilt.
STAMP = ".complete"

#: The tokenizer's training text: any few lines do; byte-level BPE can encode everything.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Chaos engineering injects faults into a system to see how it copes.",
    "An inference server answers requests with the predictions of a model.",
    "Latency, throughput and errors are what the load balancer sees.",
    "Replicas crash, hang, slow down and come back; clients retry.",
    "Hello, world! How are you today? I am fine, thank you.",
]

SPECIALS = {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}

#: Simple role-tagged chat format, so /v1/chat/completions works (vLLM refuses chat
#: requests for a tokenizer without a template).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """Byte-level BPE (like GPT-2/Llama 3), so any prompt encodes and decodes back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIALS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, min_frequency=1, special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos = SPECIALS["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=SPECIALS["eos"], unk_token=SPECIALS["unk"],
        pad_token=SPECIALS["pad"], model_max_length=MAX_LEN, chat_template=CHAT_TEMPLATE,
    )


def complete(dir: Path) -> bool:
    return (dir / STAMP).exists()


def build(dir: Path) -> Path:
    """Write model + tokenizer into `dir` (created); a complete `dir` is left as it is."""
    dir = Path(dir)
    if complete(dir):
        return dir
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    tokenizer.save_pretrained(dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_LEN,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dir, safe_serialization=True)
    (dir / STAMP).write_text(json.dumps({"seed": SEED, "vocab_size": len(tokenizer)}) + "\n")
    return dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    print(build(Path(sys.argv[1])))
