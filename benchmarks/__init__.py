"""The benchmark scripts, run from the repository root as ``python -m benchmarks.<name>``
(``benchmarks/README.md``); the figures they write are in ``docs/benchmarks.md``. Shared by
all of them: ``measure`` (how a contender is timed), ``tensor_hashes`` (output digests and
the FP8 oracle), ``report`` (the figures blocks).

The children a harness starts with another interpreter (``io_floor.py``,
``deepseek_cpu_port.py``, ``formats_child.py``, ``mlx_lm_child.py``) import nothing from here
and are run by path.
"""
