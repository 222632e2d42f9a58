"""``rewrite --to mlx``: each module in its lossless native MLX form, loaded by mlx-lm 0.32.2.

For every native module: mlx-lm builds a quantized layer of the right mode and bits, and
``mx.dequantize`` of it, computed in float32 and rounded to BF16 once, equals the exact
decode (the BF16 rewrite) bit for bit. Logits are compared in float32 against a dense model
whose weights are those float32 dequantizations: MLX's quantized matmul on the CPU
dequantizes and then runs the dense kernel, so the two are equal (measured: 0.0); the
tolerance, 1e-5 of the largest logit, only allows float32 accumulation in another order
(n * 2^-24 for n <= 320 inputs per dot product is ~2e-5 relative, worst case). Against the
BF16 rewrite itself the float32 logits differ by about 1e-2: the BF16 weights are rounded,
the native ones are not (that is the point of keeping the codes).
"""

import json

import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")

from scalefix.cli import main  # noqa: E402

from tests.support.fixtures import dsv4_tiny_model  # noqa: E402
from tests.support.mlx_checks import check_native_bundle, quantized_modules  # noqa: E402
from tests.support.tiny_int_llama import KINDS, tiny_int_llama  # noqa: E402
from tests.support.tiny_llama import llama_tiny_fp8  # noqa: E402


def rewrite(*args) -> int:
    return main(["rewrite", *map(str, args)])


EXPECT = {"ct-w4-g32": ("affine", 4, 32, "bfloat16"), "ct-w8-channel": ("affine", 8, 64, "bfloat16"),
          "ct-w4-zp": ("affine", 4, 32, "float32"), "gptq": ("affine", 4, 64, "float32"),
          "awq": ("affine", 4, 64, "float32")}


@pytest.mark.parametrize("kind", KINDS)
def test_integer_llama_goes_native_and_loads_in_mlx_lm(tmp_path, kind, capsys):
    src = tiny_int_llama(tmp_path / "src", kind)
    assert rewrite(src, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    out = capsys.readouterr().out
    assert "native        14" in out and "lossless MLX form" in out
    assert ("keep float32 scales" in out) == (EXPECT[kind][3] == "float32")
    assert rewrite(src, "--out", tmp_path / "bf16") == 0
    mode, bits, group, dtype = EXPECT[kind]
    check_native_bundle(tmp_path / "mlx", tmp_path / "bf16",
                        {("QuantizedLinear", mode, bits, group, dtype): 14})
    written = json.loads((tmp_path / "mlx" / "config.json").read_text())
    assert "quant_method" not in written.get("quantization_config", {})


def test_real_writer_w4a16_goes_native(tmp_path, real_writer):
    """llmcompressor's own W4A16 (compressed-tensors pack-quantized, group 128)."""
    src = real_writer("llama-ct-w4a16")
    assert rewrite(src, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    assert rewrite(src, "--out", tmp_path / "bf16") == 0
    model, _ = mlx_lm_utils.load_model(tmp_path / "mlx")
    n = len(quantized_modules(model))
    assert n > 0
    check_native_bundle(tmp_path / "mlx", tmp_path / "bf16",
                        {("QuantizedLinear", "affine", 4, 128, "bfloat16"): n})


def test_dsv4_fp8_and_fp4_go_mxfp8_and_mxfp4(tmp_path):
    """DeepSeek-V4: FP8 + E8M0 block scales -> mxfp8 (codes copied), FP4 experts -> mxfp4
    (bytes copied), through mlx-lm's deepseek_v41 sanitize (experts stacked)."""
    fx = dsv4_tiny_model(tmp_path / "src")
    assert rewrite(fx.path, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    assert rewrite(fx.path, "--out", tmp_path / "bf16") == 0
    check_native_bundle(tmp_path / "mlx", tmp_path / "bf16", {
        ("QuantizedLinear", "mxfp8", 8, 32, "uint8"): 14,
        ("QuantizedSwitchLinear", "mxfp4", 4, 32, "uint8"): 6,
        ("QuantizedSwitchLinear", "mxfp8", 8, 32, "uint8"): 2})


def test_no_native_form_is_bf16_or_requantized_on_request(tmp_path, capsys):
    """FP8 with float block scales (weight_scale_inv) has no lossless MLX form: exact BF16 by
    default, the summary says why; --requantize 4 runs mx.quantize and reports the SQNR."""
    fx = llama_tiny_fp8(tmp_path / "src")
    assert rewrite(fx.path, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    out = capsys.readouterr().out
    assert "no lossless MLX form and are exact BF16" in out and "float block scales" in out
    model, _ = mlx_lm_utils.load_model(tmp_path / "mlx")
    assert not quantized_modules(model)
    assert rewrite(fx.path, "--to", "mlx", "--requantize", "4", "--group-size", "64",
                   "--out", tmp_path / "rq") == 0
    out = capsys.readouterr().out
    assert "re-quantized" in out and "SQNR" in out
    model, _ = mlx_lm_utils.load_model(tmp_path / "rq")
    assert {(m.mode, m.bits, m.group_size) for m in quantized_modules(model).values()} == {
        ("affine", 4, 64)}


def test_flags_belong_to_their_mode(tmp_path, capsys):
    fx = llama_tiny_fp8(tmp_path / "src")
    assert rewrite(fx.path, "--to", "mlx", "--bits", "4") == 2
    assert rewrite(fx.path, "--to", "mlx-affine", "--requantize", "4") == 2
    assert rewrite(fx.path, "--bf16-biases") == 2
    assert "--to mlx" in capsys.readouterr().err


def test_bf16_biases_trade_exactness_and_report_it(tmp_path, capsys):
    """Zero-point modules with --bf16-biases: BF16 scales and biases, the SQNR against the
    exact decode reported (finite: -z*s is not a BF16 value for most zero points)."""
    src = tiny_int_llama(tmp_path / "src", "gptq")
    assert rewrite(src, "--to", "mlx", "--bf16-biases", "--out", tmp_path / "mlx") == 0
    out = capsys.readouterr().out
    assert "SQNR min" in out and "keep float32" not in out
    sqnr = float(out.split("SQNR min ")[1].split(" dB")[0])
    assert 20 < sqnr < 200
    model, _ = mlx_lm_utils.load_model(tmp_path / "mlx")
    assert {str(m.scales.dtype) for m in quantized_modules(model).values()} == {
        "mlx.core.bfloat16"}


def test_layout_without_transformers_then_real_mlx_lm(tmp_path):
    """The sanitize layout comes from the mlx-lm model module alone: ``--to mlx`` imports
    neither the ``mlx_lm`` package nor ``transformers``, and a later ``import mlx_lm`` in the
    same process is the real package (it loads the bundle)."""
    import subprocess
    import sys

    src = tiny_int_llama(tmp_path / "src", "ct-w4-g32")
    code = (
        "import sys\n"
        "from scalefix.cli import main\n"
        f"assert main(['rewrite', {str(src)!r}, '--to', 'mlx', '--quiet', '--out', "
        f"{str(tmp_path / 'mlx')!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m == 'transformers' or m == 'mlx_lm'))\n"
        "import mlx_lm.utils\n"
        f"model, _ = mlx_lm.utils.load_model(__import__('pathlib').Path({str(tmp_path / 'mlx')!r}))\n"
        "print(type(model.model.layers[0].mlp.down_proj).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("\n")[-2:] == ["[]", "QuantizedLinear"]


def test_streamed_output_is_what_mlx_makes(tmp_path, monkeypatch):
    """Every unit streamed from the source bytes, or every unit made by MLX (the path of
    stacked and re-quantized tensors): the same bytes, for each integer layout."""
    import scalefix.mlx.bundle_write as bundle_write

    for kind in KINDS:
        src = tiny_int_llama(tmp_path / f"src-{kind}", kind)
        assert rewrite(src, "--to", "mlx", "--quiet", "--out", tmp_path / f"{kind}-a") == 0
        with monkeypatch.context() as m:
            original = bundle_write.BundleWriter.__init__

            def no_streams(self, plan, pool):
                original(self, plan, pool)
                self._streams = {key: False for key in self._streams}
            m.setattr(bundle_write.BundleWriter, "__init__", no_streams)
            assert rewrite(src, "--to", "mlx", "--quiet", "--out", tmp_path / f"{kind}-b") == 0
        for p in (tmp_path / f"{kind}-a").iterdir():
            assert p.read_bytes() == (tmp_path / f"{kind}-b" / p.name).read_bytes(), (kind, p)
