"""The lazy MLX dequantization graph against ``formats.dequant.dequantize`` (what ``rewrite``
writes), bit for bit, NaN codes included: every fixture variant, every code of every codec,
ragged edges, stacked experts, per-channel / per-tensor scales, FP4 with every E8M0 exponent
(float32 subnormal products included), MLX's fused (compiled) and unfused evaluation, and
the BF16 that MLX 0.25-0.30 hand for F8_E4M3."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from scalefix.formats import classify, open_bundle
from scalefix.formats.dequant import dequantize, load_scale

from tests.support.fixtures import VARIANTS
from tests.support.packing import pack_low_first

mx = pytest.importorskip("mlx.core")
from scalefix.mlx import lazy_dequant  # noqa: E402  (imports mlx on use only)
from scalefix.mlx.lazy_dequant import lazy_dequantize  # noqa: E402
from scalefix.mlx.reader import read_mapped  # noqa: E402
from scalefix.formats.header import read_header  # noqa: E402


@pytest.fixture(params=["fused", "unfused"])
def compiled(request):
    """Run each test with MLX's compile on (the fused product) and off (plain ops)."""
    if request.param == "unfused":
        mx.disable_compile()
    yield request.param
    mx.enable_compile()


@pytest.fixture(params=["from_fp8", "table"])
def decoder(request, monkeypatch):
    """E4M3 through mx.from_fp8 (when this MLX has it) and through the 256-entry table."""
    if request.param == "from_fp8" and not lazy_dequant._from_fp8_exact():
        pytest.skip("this MLX has no exact mx.from_fp8")
    if request.param == "table":
        monkeypatch.setattr(lazy_dequant, "_from_fp8_exact", lambda: False)
    return request.param


def bits(array) -> np.ndarray:
    assert array.dtype == mx.bfloat16
    return np.array(array.view(mx.uint16))


def stored(qw):
    """The weight as the original mx.load hands it (read by scalefix where MLX refuses)."""
    try:
        return mx.load(str(qw.weight.file))[qw.weight.name]
    except Exception:
        return read_mapped(read_header(qw.weight.file))[qw.weight.name]


def check(qw, weight=None):
    got = lazy_dequantize(qw, stored(qw) if weight is None else weight, load_scale(qw))
    want = dequantize(qw, "bf16")
    assert tuple(got.shape) == want.shape
    assert np.array_equal(bits(got), want), qw.name


def quantized(path):
    return classify(open_bundle(path)).quantized


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_fixture_variant(variant, tmp_path, compiled, decoder):
    fx = VARIANTS[variant](tmp_path / variant)
    weights = quantized(fx.path)
    assert weights
    for qw in weights.values():
        check(qw)


def all_codes(shape, gen) -> torch.Tensor:
    """Every code 0..255, in a random order, repeated over ``shape``."""
    n = math.prod(shape)
    codes = torch.arange(n, dtype=torch.int64) % 256
    return codes[torch.randperm(n, generator=gen)].to(torch.uint8).reshape(shape)


def scales(shape, gen, zero=False) -> torch.Tensor:
    s = (torch.rand(shape, generator=gen) * 1e-2 + 1e-4) * \
        torch.where(torch.rand(shape, generator=gen) < 0.3, -1.0, 1.0)  # some negative
    if zero:
        s.view(-1)[1] = 0.0  # E5M2 +-inf * 0: the CPU's own NaN (negative on x86)
    return s


@pytest.mark.parametrize("codec, dtype", [("e4m3", torch.float8_e4m3fn),
                                          ("e5m2", torch.float8_e5m2)])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_codes_ragged_blocks(codec, dtype, scale_dtype, tmp_path, compiled, decoder):
    """[300, 260] in 128x128 blocks: ragged rows and columns; each block holds every code."""
    gen = torch.Generator().manual_seed(1)
    codes = all_codes((300, 260), gen)
    save_file({"w.weight": codes.view(dtype),
               "w.weight_scale_inv": scales((3, 3), gen, zero=codec == "e5m2").to(scale_dtype)},
              str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    assert qw.codec == codec and qw.geometry.block == (128, 128)
    check(qw)


def test_inf_times_zero_scale_is_the_nan_rewrite_writes(tmp_path, compiled):
    """Not just any NaN: the sign bit too (MLX alone would write 0x7FC0 everywhere)."""
    codes = torch.tensor([[0x7C, 0xFC, 0x7D, 0x3C]] * 2, dtype=torch.uint8)  # +inf -inf NaN 1
    save_file({"w.weight": codes.view(torch.float8_e5m2),
               "w.weight_scale_inv": torch.tensor([[0.0], [2.0]])},
              str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    check(qw)
    got = bits(lazy_dequantize(qw, stored(qw), load_scale(qw)))
    assert got[1, 0] == 0x7F80 and got[1, 1] == 0xFF80  # +-inf * 2 stays +-inf


@pytest.mark.parametrize("shape, scale_shape", [
    ((3, 300, 260), (3, 3, 3)),      # stacked experts, ragged both ways
    ((2, 256, 384), (2, 2, 3)),      # stacked experts, whole blocks
    ((300, 260), (300, 1)),          # per channel
    ((300, 260), (300,)),            # per channel, stored as [out] (Mistral)
    ((3, 300, 260), ()),             # per tensor over stacked experts
    ((300, 260), (1,)),              # per tensor
    ((260,), (1, 3)),                # a 1-D weight in blocks of 128
])
def test_geometries(shape, scale_shape, tmp_path, compiled):
    gen = torch.Generator().manual_seed(2)
    save_file({"w.weight": all_codes(shape, gen).view(torch.float8_e4m3fn),
               "w.weight_scale_inv": scales(scale_shape, gen)}, str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    check(qw)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8])
def test_fp4_every_code_with_every_e8m0_exponent(dtype, tmp_path, compiled):
    """E2M1 x 2^(e-127) for e = 0..254: tiny exponents give float32 subnormals, which MLX must
    neither flush nor round differently."""
    gen = torch.Generator().manual_seed(3)
    rows, groups = 255, 4
    codes = torch.randint(0, 16, (rows, groups * 32), dtype=torch.uint8, generator=gen)
    codes[:, :16] = torch.arange(16, dtype=torch.uint8)
    exps = torch.arange(255, dtype=torch.uint8)[:, None].repeat(1, groups)
    save_file({"w.weight": pack_low_first(codes).view(dtype),
               "w.scale": exps.view(torch.float8_e8m0fnu)}, str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    assert qw.codec == "e2m1" and qw.scale_codec == "e8m0"
    check(qw)
    got = bits(lazy_dequantize(qw, stored(qw), load_scale(qw)))
    assert (got[:8] & 0x7F80 == 0).any() and (got[:8] & 0x7F != 0).any()  # subnormals occur


def test_fp4_with_e8m0_through_the_hook_policy(tmp_path, compiled, monkeypatch):
    """DeepSeek-V4's FP4 experts and gpt-oss blocks, as SCALEFIX_MLX_MX_FORMATS=dequant asks."""
    monkeypatch.setenv("SCALEFIX_MLX_MX_FORMATS", "dequant")
    from scalefix.hooks.load_policy import wanted
    for variant in ("dsv4", "gpt-oss"):
        fx = VARIANTS[variant](tmp_path / variant)
        fp4 = [q for q in quantized(fx.path).values() if q.codec == "e2m1"]
        assert fp4 and all(wanted(q, True) for q in fp4)
        for qw in fp4:
            check(qw)


def test_f8_upcast_to_bf16_by_older_mlx(tmp_path, compiled):
    """MLX 0.25-0.30 hand F8_E4M3 as BF16 values (torch's conversion stands in for theirs)."""
    gen = torch.Generator().manual_seed(4)
    codes = all_codes((300, 260), gen)
    save_file({"w.weight": codes.view(torch.float8_e4m3fn),
               "w.weight_scale_inv": scales((3, 3), gen)}, str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    upcast = codes.view(torch.float8_e4m3fn).to(torch.bfloat16).view(torch.int16).numpy()
    check(qw, mx.array(upcast).view(mx.bfloat16))


def test_the_graph_is_not_evaluated_until_asked(tmp_path):
    gen = torch.Generator().manual_seed(5)
    save_file({"w.weight": all_codes((2048, 2048), gen).view(torch.float8_e4m3fn),
               "w.weight_scale_inv": scales((16, 16), gen)}, str(tmp_path / "m.safetensors"))
    (qw,) = quantized(tmp_path / "m.safetensors").values()
    scale = load_scale(qw)
    lazy = mx.load(str(qw.weight.file))[qw.weight.name]
    before = mx.get_active_memory()
    result = lazy_dequantize(qw, lazy, scale)
    assert mx.get_active_memory() - before < 64 * 1024   # the scale, not the 8 MB weight
    mx.eval(result)
    assert mx.get_active_memory() - before >= result.nbytes
