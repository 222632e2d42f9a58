"""The declaration decides: a declared format no scheme knows, or tensors that contradict the
declaration, are refused everywhere -- exit 2 and one line naming what is wrong in inspect,
rewrite, rewrite --to mlx and verify (nothing written), and at load time the file comes back
as stored with one stderr line (``SCALEFIX_STRICT=1`` raises). Never an exit-0 output.

Each case starts from a checkpoint scalefix decodes exactly and changes only its
declaration, so the same tensors pass before the edit (the control) and fail after it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import VARIANTS
from tests.support.int_families import awq, gptq


def _edit_quant_config(root: Path, **changes) -> None:
    path = root / "config.json"
    config = json.loads(path.read_text())
    config["quantization_config"].update(changes)
    path.write_text(json.dumps(config))


def _unknown_method(tmp: Path) -> Path:
    fx = VARIANTS["dsv3"](tmp)
    _edit_quant_config(fx.path, quant_method="hqq")
    return fx.path


def _ct_unknown_format(tmp: Path) -> Path:
    fx = VARIANTS["ct-block"](tmp)
    _edit_quant_config(fx.path, format="sparse-24-bitmask")
    return fx.path


def _ct_format_contradicts_tensors(tmp: Path) -> Path:
    fx = VARIANTS["ct-block"](tmp)  # FP8 codes, declared as packed integers
    _edit_quant_config(fx.path, format="pack-quantized")
    return fx.path


def _gptq_unknown_checkpoint_format(tmp: Path) -> Path:
    built = gptq(tmp, actorder=False)
    _edit_quant_config(built.path, checkpoint_format="marlin")
    return built.path


def _awq_unknown_version(tmp: Path) -> Path:
    built = awq(tmp)
    _edit_quant_config(built.path, version="gemv")
    return built.path


def _gptq_declared_over_fp8(tmp: Path) -> Path:
    fx = VARIANTS["dsv3"](tmp)
    (fx.path / "config.json").write_text(json.dumps(
        {**json.loads((fx.path / "config.json").read_text()),
         "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}))
    return fx.path


# case -> (builder, words the one line must hold)
CASES = {
    "unknown quant_method": (_unknown_method, ("quant_method 'hqq'", "does not decode")),
    "unknown compressed-tensors format": (_ct_unknown_format,
                                          ("'sparse-24-bitmask'", "does not decode")),
    "compressed-tensors format contradicts tensors": (_ct_format_contradicts_tensors,
                                                      ("pack-quantized", "fp8 codes")),
    "unknown GPTQ checkpoint_format": (_gptq_unknown_checkpoint_format, ("'marlin'",)),
    "unknown AWQ version": (_awq_unknown_version, ("'gemv'",)),
    "GPTQ declared over FP8 tensors": (_gptq_declared_over_fp8, ("declares gptq", "fp8 codes")),
}


def _scalefix(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefix", *map(str, args)],
                          capture_output=True, text=True)


def _one_line(proc: subprocess.CompletedProcess, words) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_refuses_in_one_line(case, tmp_path):
    build, words = CASES[case]
    src = build(tmp_path / "src")
    _one_line(_scalefix("inspect", src), words)
    for args, out in (((), "bf16"), (("--to", "mlx"), "mlx")):
        dst = tmp_path / out
        _one_line(_scalefix("rewrite", src, "--out", dst, *args), words)
        assert not dst.exists(), "a refused rewrite writes nothing"
    _one_line(_scalefix("verify", src, src), words)


def test_controls_pass(tmp_path):
    """The same tensors under their true declarations decode (so each case above is refused
    because of its declaration, not its tensors)."""
    for name, build in (("fp8", lambda t: VARIANTS["dsv3"](t).path),
                        ("ct", lambda t: VARIANTS["ct-block"](t).path),
                        ("gptq", lambda t: gptq(t, actorder=False).path),
                        ("awq", lambda t: awq(t).path)):
        src = build(tmp_path / name)
        proc = _scalefix("rewrite", src, "--out", tmp_path / f"{name}-bf16", "--quiet")
        assert proc.returncode == 0, (name, proc.stderr)


mx = pytest.importorskip("mlx.core")


def test_load_time_returns_as_stored_with_one_line(tmp_path, capfd, monkeypatch):
    from scalefix.hooks import load_policy, mlx_load
    from scalefix.hooks.load_report import REPORT, UnfixedCheckpointError
    src = _unknown_method(tmp_path / "src")
    shard = next(str(p) for p in sorted(src.glob("*.safetensors")))
    load_policy.clear_cache()
    REPORT.clear()
    monkeypatch.delenv("SCALEFIX_STRICT", raising=False)
    plain = mx.load(shard)
    mlx_load.apply(mx)
    try:
        got = mx.load(shard)
        assert set(got) == set(plain)
        for name in plain:  # as stored: what plain mx.load returns
            assert got[name].dtype == plain[name].dtype
            assert mx.array_equal(got[name], plain[name]).item()
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'hqq'" in err[0], err
        monkeypatch.setenv("SCALEFIX_STRICT", "1")
        with pytest.raises(UnfixedCheckpointError, match="hqq"):
            mx.load(shard)
    finally:
        mlx_load.revert(mx)
        REPORT.clear()
        load_policy.clear_cache()
