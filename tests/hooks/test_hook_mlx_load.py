"""The ``mlx_load`` runtime fix against real MLX: every float-scaled variant comes back
dequantized bit-exact (also with ``return_metadata=True``), as lazy arrays that cost nothing
until evaluated, MX-family checkpoints unchanged by default, scales dropped, and everything
else exactly as plain ``mx.load``."""



import numpy as np
import pytest
import torch

from scalefix.formats.header import read_header

from tests.support.fixtures import VARIANTS

mx = pytest.importorskip("mlx.core")

from tests.support.mlx_checks import bits, oracle_bits  # noqa: E402
from tests.support.paths import PEER_SCRIPTS, REPO  # noqa: E402

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


def load_all(load, path, return_metadata=False):
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    out = {}
    for f in files:
        if return_metadata:
            arrays, metadata = load(str(f), return_metadata=True)
            assert metadata == read_header(f).metadata, f
            out.update(arrays)
        else:
            out.update(load(str(f)))
    return out


@pytest.mark.parametrize("return_metadata", [False, True])
@pytest.mark.parametrize("name", FLOAT_SCALED)
def test_float_scaled_variants_come_back_dequantized(name, return_metadata, tmp_path, patched):
    fx = VARIANTS[name](tmp_path / name)
    got = load_all(patched, fx.path, return_metadata)
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


def test_metadata_comes_back_fixed_and_other_formats_untouched(tmp_path, patched):
    from safetensors.torch import save_file
    fx = VARIANTS["dsv3"](tmp_path / "m")
    shard = fx.path / "model-00002-of-00002.safetensors"
    tensors = {k: t for k, t in load_file(shard).items()}
    save_file(tensors, str(shard), metadata={"format": "pt", "who": "test"})
    arrays, meta = patched(str(shard), return_metadata=True)
    assert meta == {"format": "pt", "who": "test"}
    _, plain_meta = mx.load.__wrapped__(str(shard), return_metadata=True)
    assert meta == plain_meta
    weight = "model.layers.0.mlp.down_proj.weight"
    assert np.array_equal(bits(arrays[weight]), oracle_bits(fx.quantized[weight].oracle))
    assert weight + "_scale_inv" not in arrays
    npz = tmp_path / "x.npz"
    mx.savez(str(npz), a=mx.array([1, 2]))
    assert patched(str(npz))["a"].tolist() == [1, 2]


def load_file(path):
    from safetensors.torch import load_file as load
    return load(str(path))


def test_e5m2_file_mlx_refuses_is_read_by_scalefix_with_its_metadata(tmp_path, patched):
    fx = VARIANTS["e5m2"](tmp_path / "e")
    shard = fx.path / "model.safetensors"
    arrays, meta = patched(str(shard), return_metadata=True)
    assert meta == read_header(shard).metadata
    for weight, want in fx.quantized.items():
        assert np.array_equal(bits(arrays[weight]), oracle_bits(want.oracle))


def test_refused_dtypes_are_the_ones_this_mlx_cannot_load(tmp_path):
    """The probe agrees with loading a real file of each F8 dtype (whatever this MLX is)."""
    from safetensors.torch import save_file
    from scalefix.mlx.reader import refused_dtypes
    torch_dtypes = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
                    "F8_E8M0": torch.float8_e8m0fnu}
    refused = refused_dtypes(mx.load, set(torch_dtypes) | {"BF16", "U8"})
    assert "F8_E5M2" in refused and not {"BF16", "U8"} & refused
    for name, dtype in torch_dtypes.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({"t": torch.zeros(8, dtype=torch.uint8).view(dtype)}, str(path))
        try:
            mx.load(str(path))
            readable = True
        except Exception:
            readable = False
        assert (name in refused) == (not readable), name


def fp8_file(path, rows=2048, cols=2048):
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 0x7E, (rows, cols), dtype=torch.uint8, generator=gen)
    save_file({"w.weight": codes.view(torch.float8_e4m3fn),
               "w.weight_scale_inv": torch.rand(rows // 128, cols // 128, generator=gen)},
              str(path))
    return path


@pytest.mark.parametrize("return_metadata", [False, True])
def test_returned_arrays_are_lazy(tmp_path, patched, return_metadata):
    """Nothing of the weight is read or allocated by the load: the 4 MB of codes and the
    8 MB of BF16 appear only when the host evaluates (MLX's own active-memory counter)."""
    path = fp8_file(tmp_path / "m.safetensors")
    mx.eval(mx.zeros(1))
    before = mx.get_active_memory()
    got = patched(str(path), return_metadata=return_metadata)
    arrays = got[0] if return_metadata else got
    loaded = mx.get_active_memory() - before
    assert loaded < 64 * 1024, loaded              # the scale (1 KB) and MLX's own change
    weight = arrays["w.weight"]
    assert weight.dtype == mx.bfloat16 and weight.shape == (2048, 2048)
    mx.eval(weight)
    assert mx.get_active_memory() - before >= weight.nbytes


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


# --- older MLX releases, each in its own cached venv (tests/peers/venvs.py) ------------------

OLDER_MLX = ["mlx-0.21", "mlx-0.29"]  # the oldest with a Linux wheel; one that upcasts F8
CHECK_SCRIPT = PEER_SCRIPTS / "mlx_hook_check.py"


def all_codes_file(path, dtype, zero_scale):
    """[300, 260] in ragged 128x128 blocks holding every code (NaN and inf included)."""
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(7)
    codes = (torch.arange(300 * 260) % 256)[torch.randperm(300 * 260, generator=gen)]
    scale = torch.rand(3, 3, generator=gen) * 1e-2 - 2e-3
    if zero_scale:
        scale[0, 1] = 0.0
    save_file({"w.weight": codes.to(torch.uint8).reshape(300, 260).view(dtype),
               "w.weight_scale_inv": scale}, str(path))
    return path


@pytest.mark.peers
@pytest.mark.parametrize("peer", OLDER_MLX)
def test_hook_on_older_mlx(peer, tmp_path, monkeypatch):
    """Every fixture variant (MX family too) and every FP8 code, loaded in an older MLX
    under ``import scalefix.auto``, equals what this venv computes (torch's oracle for the
    variants, ``formats.dequant`` for the all-codes files, NaN bits included)."""
    import json
    import os
    import subprocess

    from scalefix.formats import classify, open_bundle
    from scalefix.formats.dequant import dequantize

    from tests.peers.venvs import peer_python
    try:
        python = peer_python(peer)
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{peer} venv unavailable: {exc}")
        pytest.skip(f"{peer} venv unavailable: {str(exc).splitlines()[0]}")
    groups, expected = {}, {}
    for name, make in VARIANTS.items():
        fx = make(tmp_path / name)
        files = [fx.path] if fx.path.is_file() else sorted(fx.path.glob("*.safetensors"))
        groups[name] = {"files": [str(f) for f in files],
                        "dropped": sorted({w.scale for w in fx.quantized.values()} |
                                          set(fx.activation_scales) | set(fx.orphans))}
        for weight, want in fx.quantized.items():
            expected[f"{name}/{want.output_name or weight}"] = oracle_bits(want.oracle)
    for codec, dtype in (("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
        path = all_codes_file(tmp_path / f"{codec}.safetensors", dtype, codec == "e5m2")
        (qw,) = classify(open_bundle(path)).quantized.values()
        groups[f"all-{codec}"] = {"files": [str(path)], "dropped": [qw.scale.name]}
        expected[f"all-{codec}/w.weight"] = dequantize(qw, "bf16")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"groups": groups,
                                    "lazy_file": str(fp8_file(tmp_path / "lazy.safetensors"))}))
    np.savez(tmp_path / "expected.npz", **expected)
    repo = REPO
    proc = subprocess.run([str(python), str(CHECK_SCRIPT), str(manifest),
                           str(tmp_path / "expected.npz")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo),
                               "SCALEFIX_MLX_MX_FORMATS": "dequant"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mlx"] == peer_version(peer)
    assert report["patch"] == "applied"
    assert report["checked"] == 4 * len(expected)  # compile on/off x return_metadata
    assert not report["mismatched"] and not report["missing"] and not report["not_dropped"], report
    if report["lazy"] is not None:  # MLX with an active-memory counter
        assert report["lazy"]["after_load"] < 64 * 1024, report["lazy"]
        assert report["lazy"]["after_eval"] >= report["lazy"]["nbytes"]


def peer_version(peer: str) -> str:
    from tests.peers.venvs import PEERS
    spec = next(r for r in PEERS[peer] if r.startswith("mlx"))
    return spec.split("==")[1]
