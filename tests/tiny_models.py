"""A tiny random Llama, its locally trained tokenizer and PEFT LoRA adapters, built from nothing.

The generation tests need a real model for the real vLLM engine, and nothing may be downloaded
(the hub is unreachable here and in CI). Building one takes seconds: a byte-level BPE trained
by `tokenizers` on a few lines of Rust, a 2-layer Llama with random weights (head_dim 64, the
smallest vLLM's CPU attention accepts), and adapters whose LoRA B matrices are random (PEFT
initialises them to zero, which would make an adapter that changes nothing).

Two halves: `build_tiny_models` runs in the test process (main venv) and calls this file as a
script under the vLLM venv's Python, which has torch, transformers, tokenizers and peft.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The chat template of the tiny model, in the style of Llama 3's header markers.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
VOCAB_SIZE = 512
MAX_POSITIONS = 1024
ADAPTER_RANK = 8
BIG_ADAPTER_RANK = 32

_CORPUS = [
    "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
    "/// Returns the largest element.\nfn max_of(v: &[i64]) -> Option<i64> {\n    v.iter().copied().max()\n}\n",
    "fn is_palindrome(s: &str) -> bool {\n    let r: String = s.chars().rev().collect();\n    r == s\n}\n",
    "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn test_add() {\n        assert_eq!(add(1, 2), 3);\n    }\n}\n",
    "fn main() {\n    let candidate = add;\n    assert!(candidate(2, 2) == 4);\n}\n",
    "impl Solution {\n    pub fn count(&self, items: Vec<String>) -> usize {\n        items.len()\n    }\n}\n",
    "Implement only the requested function. Write Rust code in a ```rust block.\n",
]


@dataclass(frozen=True)
class TinyModels:
    base: Path  # a model directory vLLM loads (config, safetensors, tokenizer)
    adapter: Path  # PEFT LoRA adapter, rank ADAPTER_RANK
    big_adapter: Path  # PEFT LoRA adapter, rank BIG_ADAPTER_RANK (over a rank-16 engine limit)


def build_tiny_models(out_dir: Path, python: str) -> TinyModels:
    """Build (once per directory) under the vLLM venv's `python`; returns the paths."""
    out_dir = Path(out_dir)
    models = TinyModels(out_dir / "tiny-llama", out_dir / "tiny-lora", out_dir / "tiny-lora-r32")
    if not (out_dir / "done").exists():
        subprocess.run([python, __file__, str(out_dir)], check=True, timeout=300)
        (out_dir / "done").write_text("ok")
    return models


# ------------------------------------------------------------------ below: runs in the vLLM venv


def _train_tokenizer(target: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(target)


def _build(out_dir: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    base = out_dir / "tiny-llama"
    _train_tokenizer(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: vLLM's CPU backend rejects smaller heads
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(base, safe_serialization=True)
    for rank, name in ((ADAPTER_RANK, "tiny-lora"), (BIG_ADAPTER_RANK, "tiny-lora-r32")):
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(base), lora)
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(std=0.5)  # zero-initialised B would change nothing
        peft_model.save_pretrained(out_dir / name)
        config_path = out_dir / name / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = str(base)
        config_path.write_text(json.dumps(adapter_config, indent=2))


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
