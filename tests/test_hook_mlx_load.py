"""The ``mlx_load`` runtime fix against real MLX: every float-scaled variant comes back
dequantized bit-exact, MX-family checkpoints unchanged by default, scales dropped, and
everything else exactly as plain ``mx.load``."""


import numpy as np
import pytest
import torch

from .fixtures import VARIANTS

mx = pytest.importorskip("mlx.core")

MX_FAMILY = {"dsv4", "gpt-oss"}
FLOAT_SCALED = sorted(set(VARIANTS) - MX_FAMILY)


@pytest.fixture
def patched(monkeypatch):
    from scalefix.hooks import mlx_load
    original = mx.load
    mlx_load.apply(mx)
    yield mx.load
    mlx_load.revert(mx)
    assert mx.load is original


def load_all(load, path):
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load(str(f)))
    return out


def bits(array):
    return np.array(array.view(mx.uint16) if array.dtype == mx.bfloat16 else array)


def oracle_bits(tensor):
    return tensor.view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("name", FLOAT_SCALED)
def test_float_scaled_variants_come_back_dequantized(name, tmp_path, patched):
    fx = VARIANTS[name](tmp_path / name)
    got = load_all(patched, fx.path)
    for weight, want in fx.quantized.items():
        array = got[want.output_name or weight]
        assert array.dtype == mx.bfloat16 and tuple(array.shape) == tuple(want.oracle.shape)
        assert np.array_equal(bits(array), oracle_bits(want.oracle)), weight
    dropped = {w.scale for w in fx.quantized.values()} | set(fx.activation_scales) | \
        set(fx.orphans) | set(fx.markers)
    assert not dropped & set(got)
    plain = load_all(mx.load.__wrapped__, fx.path) if fx.plain else {}
    for p in fx.plain:
        assert np.array_equal(np.array(got[p].view(mx.uint8)), np.array(plain[p].view(mx.uint8)))


def test_without_scalefix_the_trap_is_there(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    raw = load_all(mx.load, fx.path)
    weight = "model.layers.0.mlp.down_proj.weight"
    assert raw[weight].dtype == mx.uint8  # raw FP8 codes, no scale
    assert weight + "_scale_inv" in raw
    e5m2 = VARIANTS["e5m2"](tmp_path / "e")
    with pytest.raises(Exception, match="F8_E5M2"):
        load_all(mx.load, e5m2.path)


def test_cross_shard_scale(tmp_path, patched):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    weight = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    first = patched(str(fx.path / "model-00001-of-00002.safetensors"))
    second = patched(str(fx.path / "model-00002-of-00002.safetensors"))
    assert np.array_equal(bits(first[weight]), oracle_bits(fx.quantized[weight].oracle))
    assert weight + "_scale_inv" not in second  # consumed by the other shard's weight


@pytest.mark.parametrize("name", sorted(MX_FAMILY))
def test_mx_family_unchanged_by_default_and_dequantized_on_request(name, tmp_path, patched,
                                                                    monkeypatch):
    fx = VARIANTS[name](tmp_path / name)
    plain = load_all(mx.load.__wrapped__, fx.path)
    got = load_all(patched, fx.path)
    assert got.keys() == plain.keys()
    assert all(got[k].dtype == plain[k].dtype and
               np.array_equal(np.array(got[k].view(mx.uint8)), np.array(plain[k].view(mx.uint8)))
               for k in got)
    monkeypatch.setenv("SCALEFIX_MLX_MX_FORMATS", "dequant")
    got = load_all(patched, fx.path)
    for weight, want in fx.quantized.items():
        assert np.array_equal(bits(got[want.output_name or weight]), oracle_bits(want.oracle))
        assert want.scale not in got


def test_metadata_and_other_formats_untouched(tmp_path, patched):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    shard = str(fx.path / "model-00001-of-00002.safetensors")
    arrays, meta = patched(shard, return_metadata=True)
    assert arrays[list(fx.quantized)[0]].dtype == mx.uint8 and isinstance(meta, dict)
    npz = tmp_path / "x.npz"
    mx.savez(str(npz), a=mx.array([1, 2]))
    assert patched(str(npz))["a"].tolist() == [1, 2]


def test_clean_file_returns_the_very_object_the_original_returned(tmp_path, monkeypatch):
    from scalefix.hooks import mlx_load
    clean = tmp_path / "clean.safetensors"
    mx.save_safetensors(str(clean), {"w": mx.zeros((4, 4))})
    real, results = mx.load, []

    def spy(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]
    monkeypatch.setattr(mx, "load", spy)
    mlx_load.apply(mx)
    try:
        result = mx.load(str(clean))
    finally:
        mlx_load.revert(mx)
    assert mx.load is spy and result is results[-1]


def test_bad_scale_falls_back_to_upstream_behaviour_loudly(tmp_path, patched, capfd):
    root = tmp_path / "m"
    root.mkdir()
    from safetensors.torch import save_file
    save_file({"w.weight": torch.zeros(4, 4, dtype=torch.float8_e4m3fn),
               "w.weight_scale_inv": torch.tensor([[float("nan")]])}, str(root / "m.safetensors"))
    got = patched(str(root / "m.safetensors"))
    assert got["w.weight"].dtype == mx.uint8  # what plain mx.load gives
    assert "NaN or infinity" in capfd.readouterr().err
