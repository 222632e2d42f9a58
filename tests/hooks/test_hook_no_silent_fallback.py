"""The mx.load hook never falls back silently: a file of a quantized checkpoint it cannot fix
gets one stderr line (file, reason, what the caller gets), is counted with its reason in
``scalefix.status()``, and raises under ``SCALEFIX_STRICT=1``. And a bundle is classified
once per process however many of its shards are loaded, yet an edited shard, index or config is seen."""

import json
import os

import pytest

from tests.support.fixtures import VARIANTS
from tests.support.hf_cache import into_cache

mx = pytest.importorskip("mlx.core")

FIRST = "model-00001-of-00002.safetensors"
SECOND = "model-00002-of-00002.safetensors"
CROSS = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"


@pytest.fixture
def hooked(monkeypatch):
    from scalefix.hooks import load_policy, mlx_load
    from scalefix.hooks.load_report import REPORT
    load_policy.clear_cache()
    REPORT.clear()
    monkeypatch.delenv("SCALEFIX_STRICT", raising=False)
    mlx_load.apply(mx)
    yield mx.load
    mlx_load.revert(mx)
    REPORT.clear()
    load_policy.clear_cache()


def unreadable_index(root):
    (root / "model.safetensors.index.json").write_text("{not json")


def missing_sibling(root):
    (root / SECOND).unlink()


def truncated_sibling(root):
    data = (root / SECOND).read_bytes()
    (root / SECOND).write_bytes(data[: len(data) // 2])


def nested_index(root):
    (root / "model.safetensors.index.json").write_text("[" * 5000 + "]" * 5000)


def nan_scale(root):
    import torch
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(root / SECOND))
    tensors[CROSS + "_scale_inv"] = torch.full_like(tensors[CROSS + "_scale_inv"],
                                                    float("nan"))
    save_file(tensors, str(root / SECOND))


BREAKAGES = {"unreadable index": (unreadable_index, "cannot read the index"),
             "missing sibling shard": (missing_sibling, "does not exist"),
             "truncated sibling shard": (truncated_sibling, "truncated"),
             "deeply nested index": (nested_index, "index"),
             "NaN scale": (nan_scale, "NaN")}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
@pytest.mark.parametrize("layout", ["plain", "hf-cache"])
def test_unfixable_file_says_so_once_counts_it_and_strict_raises(case, layout, tmp_path,
                                                                 hooked, capfd, monkeypatch):
    import scalefix
    break_it, why = BREAKAGES[case]
    fx = VARIANTS["dsv3"](tmp_path / "m")
    break_it(fx.path)
    root = into_cache(fx.path, tmp_path / "hub", "acme/Broken") if layout == "hf-cache" \
        else fx.path
    shard = str(root / FIRST)
    for _ in range(2):  # once per file, not once per call
        got = hooked(shard)
    assert got[CROSS].dtype == mx.uint8  # what plain mx.load returns: the raw codes
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert shard in err[0] and why in err[0] and "plain mx.load" in err[0], err[0]
    files = next(r for r in scalefix.status() if r["name"] == "mlx_load")["files"]
    assert files["unfixed"] == 1 and why in files["unfixed_reasons"][shard]
    monkeypatch.setenv("SCALEFIX_STRICT", "1")
    from scalefix.hooks.load_report import UnfixedCheckpointError
    with pytest.raises(UnfixedCheckpointError, match=why):
        hooked(shard)


def test_plain_file_with_a_broken_index_passes_quietly(tmp_path, hooked, capfd):
    """Nothing quantized in the file: mx.load's result is right, nothing to warn about."""
    root = tmp_path / "m"
    root.mkdir()
    mx.save_safetensors(str(root / "model-00001-of-00002.safetensors"),
                        {"w": mx.zeros((4, 4), dtype=mx.bfloat16)})
    (root / "model.safetensors.index.json").write_text("{not json")
    got = hooked(str(root / "model-00001-of-00002.safetensors"))
    assert got["w"].dtype == mx.bfloat16
    assert capfd.readouterr().err == ""


def test_status_counts_fixed_and_passed_through(tmp_path, hooked):
    import scalefix
    fx = VARIANTS["dsv3"](tmp_path / "m")
    clean = tmp_path / "clean.safetensors"
    mx.save_safetensors(str(clean), {"w": mx.zeros((2, 2))})
    for shard in (FIRST, SECOND):
        hooked(str(fx.path / shard))
    hooked(str(clean))
    files = next(r for r in scalefix.status() if r["name"] == "mlx_load")["files"]
    assert (files["fixed"], files["passed_through"], files["unfixed"]) == (2, 1, 0)


def many_shards(root, shards=12):
    """A multi-shard FP8 checkpoint, the odd weights' scales in the next shard."""
    import torch
    from safetensors.torch import save_file
    root.mkdir()
    contents = [{} for _ in range(shards)]
    for s in range(shards):
        for w in range(5):
            name = f"model.layers.{s}.mlp.w{w}.weight"
            contents[s][name] = torch.zeros(130, 200, dtype=torch.float8_e4m3fn)
            home = s + 1 if w % 2 and s + 1 < shards else s
            contents[home][name + "_scale_inv"] = torch.ones(2, 2)
    weight_map = {}
    for s, tensors in enumerate(contents):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file(tensors, str(root / fname))
        weight_map.update({k: fname for k in tensors})
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return sorted(root.glob("*.safetensors"))


def test_one_classification_per_bundle_per_process(tmp_path, hooked, monkeypatch):
    from scalefix.hooks import load_policy
    calls = []
    real = load_policy.classify

    def counting(bundle, *a, **k):
        calls.append(bundle.path)
        return real(bundle, *a, **k)
    monkeypatch.setattr(load_policy, "classify", counting)
    shards = many_shards(tmp_path / "m")
    cached = into_cache(tmp_path / "m", tmp_path / "hub", "acme/Many")
    for root in (shards, sorted(cached.glob("*.safetensors"))):
        for shard in root:
            got = hooked(str(shard))
            assert all(a.dtype == mx.bfloat16 for a in got.values())
    assert len(calls) == 2  # one per bundle (the plain directory, the snapshot)
    # an edited shard is seen: the bundle is classified again, once
    st = os.stat(shards[3])
    os.utime(shards[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    for shard in shards:
        hooked(str(shard))
    assert len(calls) == 3
    # so is a config written beside it (the block size and format come from it)
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "x"}))
    for shard in shards:
        hooked(str(shard))
    assert len(calls) == 4
