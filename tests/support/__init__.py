"""The tests' helpers, imported by tests and benchmarks as ``tests.support.<module>``; none
imports a test module.

- ``checkpoint``: the one shard + index + config writer (``save_checkpoint``, ``shard_names``,
  ``same_tree``); ``paths``: REPO, PEER_SCRIPTS, OLD_JANG;
- ``packing``: one packer per stored layout (integer bitstreams, AWQ GEMM, FP4 nibbles);
- ``fixtures``: every FP8 / FP4 variant of docs/formats.md and the tiny DeepSeek-V4 body
  (``dsv4_layers``); tiny whole models per architecture: ``tiny_llama``, ``tiny_int_llama``,
  ``seed002`` (DeepSeek-V4, compressed-tensors), ``dsv3_fp8``, ``tiny_qwen3_moe`` (NVFP4);
- ``int_families`` (integer / NVFP4 builders and oracles), ``int_layouts`` (single modules),
  ``int_checks`` (the tables and checks every integer family folder runs);
- ``jang_fp8_fixtures``, ``family_checks``, ``malformed``, ``mlx_checks``: per-area helpers;
- ``hf_cache``, ``killing``, ``small_disk`` (+ ``fake_disk/``), ``mlx_logits``,
  ``mlx_lm_peer``: the Hugging Face cache layout, killed runs, small disks, mlx-lm children.
"""
