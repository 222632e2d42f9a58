"""The tests' helpers, imported by tests and benchmarks, never importing a test module.

- ``checkpoint``: the one shard + index + config writer;
- ``packing``: one packer per stored layout (integer bitstreams, AWQ GEMM, FP4 nibbles);
- ``fixtures``: every FP8 / FP4 variant of docs/formats.md, the tiny DeepSeek-V4 body, and
  tiny whole models per architecture (``tiny_llama``, ``tiny_int_llama``, ``seed002``);
- ``int_families`` / ``int_layouts``: integer and NVFP4 builders and their oracles;
- ``jang_fp8_fixtures``, ``family_checks``, ``malformed``, ``mlx_checks``: per-area helpers;
- ``hf_cache``, ``killing``, ``small_disk`` (+ ``fake_disk/``), ``mlx_logits``,
  ``mlx_lm_peer``: the Hugging Face cache layout, killed runs, small disks, mlx-lm children.
"""
