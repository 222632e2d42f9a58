"""Tiny random BF16 causal LM (llama | qwen3) + a local WordLevel tokenizer, no download.

usage: python make_tiny.py OUT ARCH
Dims are multiples of 128 where FP8 block quantization touches them (transformers'
FineGrainedFP8 path has trouble with ragged dims)."""

import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM)

out, arch = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
dims = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512,
            tie_word_embeddings=False)
if arch == "llama":
    model = LlamaForCausalLM(LlamaConfig(**dims))
elif arch == "qwen3":
    model = Qwen3ForCausalLM(Qwen3Config(head_dim=64, **dims))
elif arch == "deepseek_v3":  # dense (first_k_dense_replace = layers): mlx CPU MoE wants float32
    model = DeepseekV3ForCausalLM(DeepseekV3Config(
        vocab_size=1024, hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=2, kv_lora_rank=128, q_lora_rank=128, qk_rope_head_dim=32,
        qk_nope_head_dim=64, v_head_dim=64, max_position_embeddings=512,
        tie_word_embeddings=False))
else:
    raise SystemExit(f"unknown arch {arch}")
model.to(torch.bfloat16).save_pretrained(out)
vocab = {f"t{i}": i for i in range(1000)}
vocab.update({"<unk>": 1000, "<s>": 1001, "</s>": 1002})
tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                        eos_token="</s>").save_pretrained(out)
