"""Tiny random BF16 Llama whose MLP width (300) is a multiple of neither 32 nor 128:
down_proj has in = 300, gate/up_proj out = 300. llmcompressor's group strategies refuse it
(compressed-tensors: "tensor column shape must be divisble by the given group_size"); the
channel strategies write it (INT4 channel: 38 words a row, the last one half full).

usage: python make_tiny_ragged.py OUT"""

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(
    hidden_size=256, intermediate_size=300, num_hidden_layers=1, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512,
    tie_word_embeddings=False)).to(torch.bfloat16).save_pretrained(sys.argv[1])
