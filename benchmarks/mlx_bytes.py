"""Byte-for-byte guard of ``rewrite --to mlx`` / ``--to mlx-affine`` outputs across a refactor.

    python -m benchmarks.mlx_bytes record DIR     # digests of today's outputs -> DIR/digests.json
    python -m benchmarks.mlx_bytes check DIR      # rerun, compare with DIR/digests.json

Fixtures (generated once under DIR/src, deterministic): the tiny integer Llamas of the tests
(every kind), the tiny DeepSeek-V4, Llama FP8, Mixtral FP8 and gpt-oss models, and 2-layer
``make_formats`` checkpoints (TinyLlama widths, 1000-word vocabulary) of every family, some
written with a small ``--max-shard-size`` so the output spans several shards. Each case is
rewritten in a fresh process (``python -m scalefix rewrite``) and every output file's sha256
recorded. Exit 1 when a digest differs (``check``). Run from the repository root.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


FORMATS = ("ct-w4a16", "ct-w4a16-asym", "gptq", "awq", "nvfp4", "dsv4", "fp8")
KINDS = ("ct-w4-g32", "ct-w8-channel", "ct-w4-zp", "gptq", "awq")

# (case name, source name, rewrite arguments)
CASES = [(f"tiny-{k}", f"tiny-{k}", ["--to", "mlx"]) for k in KINDS] + [
    ("tiny-gptq-bf16-biases", "tiny-gptq", ["--to", "mlx", "--bf16-biases"]),
    ("dsv4-mlx", "dsv4", ["--to", "mlx"]),
    ("dsv4-affine", "dsv4", ["--to", "mlx-affine"]),
    ("dsv4-affine-fp8", "dsv4", ["--to", "mlx-affine", "--include-fp8", "--bits", "3",
                                 "--group-size", "64"]),
    ("llama-fp8-mlx", "llama-fp8", ["--to", "mlx"]),
    ("llama-fp8-rq", "llama-fp8", ["--to", "mlx", "--requantize", "4", "--group-size", "64"]),
    ("mixtral-rq", "mixtral-fp8", ["--to", "mlx", "--requantize", "4"]),
    ("mixtral-affine", "mixtral-fp8", ["--to", "mlx-affine", "--include-fp8"]),
    ("gpt-oss-mlx", "gpt-oss", ["--to", "mlx"]),
] + [(f"fmt-{f}", f"fmt-{f}", ["--to", "mlx", "--max-shard-size", "40MB"]) for f in FORMATS] + [
    ("fmt-fp8-rq", "fmt-fp8", ["--to", "mlx", "--requantize", "4", "--group-size", "64"]),
    ("fmt-nvfp4-affine", "fmt-nvfp4", ["--to", "mlx-affine"]),
]


def make_source(name: str, path: Path) -> None:
    if name.startswith("tiny-"):
        from tests.support.tiny_int_llama import tiny_int_llama
        tiny_int_llama(path, name[len("tiny-"):])
    elif name == "dsv4":
        from tests.support.fixtures import dsv4_tiny_model
        dsv4_tiny_model(path)
    elif name == "llama-fp8":
        from tests.support.tiny_llama import llama_tiny_fp8
        llama_tiny_fp8(path)
    elif name == "mixtral-fp8":
        from tests.support.fixtures import mixtral_tiny_fp8
        mixtral_tiny_fp8(path)
    elif name == "gpt-oss":
        from tests.support.fixtures import gpt_oss_tiny_model
        gpt_oss_tiny_model(path)
    else:
        from benchmarks import make_formats
        make_formats.generate(path, name[len("fmt-"):], layers=2, vocab=1000,
                              layers_per_shard=1, verbose=False)


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.iterdir()) if p.is_file()}


def run_all(workdir: Path, only=None) -> dict:
    src_root, out_root = workdir / "src", workdir / "out"
    out_root.mkdir(parents=True, exist_ok=True)
    result = {}
    for case, source, args in CASES:
        if only and case not in only:
            continue
        src = src_root / source
        if not (src / "config.json").exists():
            make_source(source, src)
        out = out_root / case
        subprocess.run(["rm", "-rf", str(out)], check=True)
        proc = subprocess.run([sys.executable, "-m", "scalefix", "rewrite", str(src), *args,
                               "--out", str(out), "--quiet"], capture_output=True, text=True,
                              cwd=ROOT)
        if proc.returncode:
            result[case] = {"rc": proc.returncode, "err": proc.stderr.strip()[-400:]}
        else:
            result[case] = digests(out)
        print(f"{case}: {'ok' if not proc.returncode else proc.stderr.strip()[-200:]}",
              file=sys.stderr, flush=True)
    return result


def main(argv=None) -> int:
    argv = argv or sys.argv[1:]
    mode, workdir, only = argv[0], Path(argv[1]), set(argv[2:])
    got = run_all(workdir, only)
    if mode == "record":
        (workdir / "digests.json").write_text(json.dumps(got, indent=1, sort_keys=True))
        return 0
    want = json.loads((workdir / "digests.json").read_text())
    bad = [case for case in got if got[case] != want.get(case)]
    for case in bad:
        print(f"DIFFERS: {case}", file=sys.stderr)
        for name in sorted(set(got[case]) | set(want.get(case, {}))):
            if got[case].get(name) != want.get(case, {}).get(name):
                print(f"  {name}", file=sys.stderr)
    print(f"{len(got) - len(bad)}/{len(got)} cases byte-identical", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
