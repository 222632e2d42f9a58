"""Real mlx-lm on real-writer checkpoints, in fresh interpreters: with ``import scalefix.auto``
``mlx_lm.load`` succeeds and the logits are bit-identical to loading the BF16 checkpoint that
``scalefix rewrite`` writes offline; without it, each case fails. Also through the
sitecustomize drop-in, and with the kill switch."""

import os
import subprocess
import sys

import pytest

from scalefix.cli import main

from tests.support.mlx_logits import logits, same_bits
from tests.support.paths import REPO

pytestmark = pytest.mark.peers
pytest.importorskip("mlx_lm")

FAILURES = {"hf-fp8": "parameters not in model",
            "mfp-fp8-block": "unsupported compressed-tensors format",
            "mfp-fp8-dynamic": "unsupported compressed-tensors format"}


@pytest.fixture(params=[(a, w) for a in ("llama", "qwen3") for w in FAILURES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, real_writer, tmp_path):
    arch, writer = request.param
    src = real_writer(f"{arch}-{writer}")
    offline = tmp_path / "offline-bf16"
    assert main(["rewrite", str(src), "--out", str(offline), "--quiet"]) == 0
    _, reference = logits(offline, tmp_path / "ref.npy")
    return writer, src, reference


def test_scalefix_auto_makes_mlx_lm_load_correctly(case, tmp_path):
    writer, src, reference = case
    proc, got = logits(src, tmp_path / "got.npy", prelude="import scalefix.auto")
    assert proc.returncode == 0, proc.stderr
    assert same_bits(got, reference)


def test_without_scalefix_mlx_lm_fails(case, tmp_path):
    writer, src, _ = case
    proc, _ = logits(src, tmp_path / "got.npy")
    assert proc.returncode != 0 and FAILURES[writer] in proc.stderr


def test_sitecustomize_drop_in_and_kill_switch(real_writer, tmp_path):
    src = real_writer("llama-mfp-fp8-block")
    offline = tmp_path / "offline-bf16"
    assert main(["rewrite", str(src), "--out", str(offline), "--quiet"]) == 0
    _, reference = logits(offline, tmp_path / "ref.npy")
    site = str(REPO / "sitecustomize_example")
    proc, got = logits(src, tmp_path / "got.npy", PYTHONPATH=site)
    assert proc.returncode == 0, proc.stderr
    assert same_bits(got, reference)
    proc, _ = logits(src, tmp_path / "off.npy", PYTHONPATH=site, SCALEFIX_DISABLE="1")
    assert proc.returncode != 0 and "unsupported compressed-tensors format" in proc.stderr


def test_sitecustomize_chains_the_one_it_shadows_and_survives_without_scalefix(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os; os.environ['CHAINED'] = 'yes'\n")
    site = str(REPO / "sitecustomize_example")
    code = "import os, sys; print(os.environ.get('CHAINED'), 'scalefix.auto' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{site}:{other}"})
    assert proc.stdout.split() == ["yes", "True"], proc.stderr
    bare = tmp_path / "bare-venv"  # an interpreter where scalefix is not installed
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = subprocess.run([str(bare / "bin" / "python"), "-c", "print('started')"],
                          capture_output=True, text=True,
                          env={"PYTHONPATH": f"{site}:{other}", "PATH": os.environ["PATH"]})
    assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr
