"""The three upstream diffs ``patches/mlx_lm-0.32.2-*.diff``, proven on released mlx-lm
0.32.2 without scalefix (helpers: tests/support/mlx_lm_peer.py).

Per diff: it applies cleanly (``git apply --check``) to the wheel's ``mlx_lm/`` and, with its
test hunks, to the sdist; the patched files compile; its upstream tests fail on the released
code and pass patched; and the case the bug breaks, which fails (or computes garbage)
unpatched, gives bit-identical logits patched:

- weight-scale-name: a DeepSeek-V3 checkpoint with ``weight_scale`` scales and an fp8 config
  computes exactly what mlx-lm's own ``weight_scale_inv`` path computes.
- load-fp8: the same under a compressed-tensors config; Llama and Qwen3 FP8 (transformers'
  and llmcompressor's real output, and the tiny sharded Llama with ragged blocks; both scale
  names; fp8 and compressed-tensors configs; block and per-channel scales) compute exactly
  what their ``scalefix rewrite`` BF16 twin computes in the unpatched mlx-lm; a Qwen3-MoE
  loads the same parameters as its BF16 twin (experts dequantized, then stacked).
- convert: ``mlx_lm convert --dtype bfloat16`` of an FP8 checkpoint writes no
  ``quantization_config``.
"""

import json
import py_compile
import shutil
import subprocess

import numpy as np
import pytest

from tests.support import mlx_lm_peer as peer_mod
from tests.support.mlx_lm_peer import DIFFS, VERSION, ct_config, git_apply, logits, patched_copy, \
    rename_scales, same_bits, scalefix_rewrite, with_config
from tests.support.dsv3_fp8 import fp8_dsv3
from tests.support.tiny_llama import llama_tiny_fp8

pytestmark = [pytest.mark.peers, pytest.mark.slow]
pytest.importorskip("torch")

NAME, LOAD, CONVERT = DIFFS["weight-scale-name"], DIFFS["load-fp8"], DIFFS["convert"]
# the upstream tests each diff adds (tests/ of the mlx-lm repository)
UPSTREAM_TESTS = {
    NAME: ["tests.test_models.TestModels.test_deepseek_v3",
           "tests.test_models.TestModels.test_mistral4",
           "tests.test_models.TestModels.test_all_models"],
    LOAD: ["tests.test_utils.TestUtils.test_load_fp8_model"],
    CONVERT: ["tests.test_utils.TestUtils.test_convert_fp8_model_drops_quantization_config"],
}
REFUSED_CT = "unsupported compressed-tensors format 'float-quantized'"
NOT_IN_MODEL = "parameters not in model"


@pytest.fixture(scope="module")
def peer():
    return peer_mod.peer()


@pytest.fixture(scope="module")
def sdist():
    from tests.peers.sources import released_sdist
    return peer_mod.available(lambda: released_sdist("mlx-lm", VERSION))


@pytest.fixture(scope="module")
def trees(peer, tmp_path_factory):
    """The wheel's mlx_lm, unpatched and with each diff (and all three), as PYTHONPATH roots."""
    _, package = peer
    tmp = tmp_path_factory.mktemp("trees")
    out = {"unpatched": patched_copy(package, tmp / "unpatched")}
    for diff in DIFFS.values():
        out[diff] = patched_copy(package, tmp / diff, diff)
    out["all"] = patched_copy(package, tmp / "all", *DIFFS.values())
    return out


@pytest.fixture(scope="module")
def checkpoints(real_writer, tmp_path_factory):
    """name -> checkpoint; ``ref:NAME`` is the scalefix BF16 rewrite of NAME."""
    tmp = tmp_path_factory.mktemp("ckpt")
    base = real_writer("tiny-dsv3-bf16")
    inv = fp8_dsv3(base, tmp / "dsv3-inv-fp8", "weight_scale_inv")
    plain = fp8_dsv3(base, tmp / "dsv3-plain-fp8", "weight_scale")
    out = {
        "dsv3-inv-fp8": inv,
        "dsv3-plain-fp8": plain,
        "dsv3-plain-ct": with_config(_copy(plain, tmp / "dsv3-plain-ct"), ct_config()),
        "dsv3-inv-ct": with_config(_copy(inv, tmp / "dsv3-inv-ct"), ct_config()),
    }
    llama = tmp / "llama-tiny-inv-fp8"
    llama.mkdir()
    llama_tiny_fp8(llama)
    dense = {
        "llama-tiny-inv-fp8": llama,  # sharded, ragged 128-blocks, a scale in another shard
        "llama-tiny-plain-fp8": rename_scales(llama, tmp / "llama-tiny-plain-fp8",
                                              "weight_scale"),
        "llama-tiny-plain-ct": rename_scales(llama, tmp / "llama-tiny-plain-ct",
                                             "weight_scale", ct_config()),
    }
    for arch in ("llama", "qwen3"):
        hf = real_writer(f"{arch}-hf-fp8")                   # transformers: weight_scale_inv
        block = real_writer(f"{arch}-mfp-fp8-block")         # llmcompressor: weight_scale
        dense[f"{arch}-hf-inv-fp8"] = hf
        dense[f"{arch}-hf-plain-fp8"] = rename_scales(hf, tmp / f"{arch}-hf-plain-fp8",
                                                      "weight_scale")
        dense[f"{arch}-mfp-plain-ct-block"] = block
        dense[f"{arch}-mfp-inv-ct-block"] = rename_scales(block, tmp / f"{arch}-mfp-inv-ct",
                                                          "weight_scale_inv")
        dense[f"{arch}-mfp-plain-ct-channel"] = real_writer(f"{arch}-mfp-fp8-dynamic")
    for name, path in dense.items():
        out[name] = path
        out[f"ref:{name}"] = scalefix_rewrite(path, tmp / f"ref-{name}")
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def results(peer, trees, checkpoints, tmp_path_factory):
    """tree -> checkpoint -> logits or error; references only through the unpatched tree."""
    python, _ = peer
    tmp = tmp_path_factory.mktemp("logits")
    fp8 = {k: v for k, v in checkpoints.items() if not k.startswith("ref:")}
    return {tree: logits(python, root, checkpoints if tree == "unpatched" else fp8, tmp / tree)
            for tree, root in trees.items() if tree != CONVERT}


def _dense(checkpoints):
    return [k for k in checkpoints if not k.startswith(("ref:", "dsv3"))]


def test_each_diff_applies_to_the_wheel_and_the_sdist_and_compiles(peer, sdist, tmp_path):
    _, package = peer
    for diff in DIFFS.values():
        wheel = peer_mod.copy_package(package, tmp_path / diff / "wheel")
        proc = git_apply(wheel, diff, "--check", "--include=mlx_lm/*")
        assert proc.returncode == 0, proc.stderr
        source = tmp_path / diff / "sdist"
        shutil.copytree(sdist, source, ignore=shutil.ignore_patterns("__pycache__"))
        proc = git_apply(source, diff, "--check")    # the tests/ hunks too
        assert proc.returncode == 0, proc.stderr
        proc = git_apply(wheel, diff, "--include=mlx_lm/*", "--numstat")
        touched = [line.split("\t")[2] for line in proc.stdout.splitlines()]
        assert touched and all(t.startswith("mlx_lm/") for t in touched)
        for name in touched:  # the sdist's release source is the wheel's, byte for byte
            assert (source / name).read_bytes() == (wheel / name).read_bytes(), name
        assert git_apply(wheel, diff, "--include=mlx_lm/*").returncode == 0
        for name in touched:
            py_compile.compile(str(wheel / name), cfile=str(tmp_path / "x.pyc"), doraise=True)
    # all three together, in either order
    for order in (list(DIFFS.values()), list(DIFFS.values())[::-1]):
        tree = peer_mod.copy_package(package, tmp_path / "together" / str(order[0]))
        for diff in order:
            assert git_apply(tree, diff, "--include=mlx_lm/*").returncode == 0, diff


def test_upstream_tests_fail_on_the_release_and_pass_patched(peer, sdist, tmp_path):
    python, _ = peer
    for diff, tests in UPSTREAM_TESTS.items():
        tree = tmp_path / diff
        shutil.copytree(sdist, tree, ignore=shutil.ignore_patterns("__pycache__"))
        assert git_apply(tree, diff, "--include=tests/*").returncode == 0
        released = _unittest(python, tree, tests)
        assert released.returncode != 0, f"{diff}: its tests pass without the fix"
        assert "FAIL" in released.stderr or "ERROR" in released.stderr
        assert git_apply(tree, diff, "--include=mlx_lm/*").returncode == 0
        patched = _unittest(python, tree, tests)
        assert patched.returncode == 0, f"{diff}:\n{patched.stderr[-3000:]}"
        assert f"Ran {len(tests)} test" in patched.stderr


def _unittest(python, tree, tests):
    return subprocess.run([str(python), "-m", "unittest", *tests], cwd=tree,
                          capture_output=True, text=True, env=peer_mod.env(tree), timeout=600)


def test_weight_scale_name_dsv3_fp8_config(results):
    released, fixed = results["unpatched"], results[NAME]
    reference = released["dsv3-inv-fp8"]                 # mlx-lm's own weight_scale_inv path
    assert isinstance(reference, np.ndarray) and np.isfinite(reference).all()
    garbage = released["dsv3-plain-fp8"]                 # loads silently, raw FP8 codes
    assert isinstance(garbage, np.ndarray) and not np.allclose(garbage, reference, atol=1.0)
    assert same_bits(fixed["dsv3-plain-fp8"], reference)
    assert same_bits(fixed["dsv3-inv-fp8"], reference)
    assert REFUSED_CT in fixed["dsv3-plain-ct"]          # a compressed-tensors config: load-fp8


def test_load_fp8_dsv3_compressed_tensors_and_fp8_configs(results):
    released, fixed = results["unpatched"], results[LOAD]
    reference = released["dsv3-inv-fp8"]
    assert REFUSED_CT in released["dsv3-plain-ct"] and REFUSED_CT in released["dsv3-inv-ct"]
    for name in ("dsv3-plain-ct", "dsv3-inv-ct", "dsv3-plain-fp8", "dsv3-inv-fp8"):
        assert same_bits(fixed[name], reference), name   # load_model's dequant == sanitize's


def test_load_fp8_llama_and_qwen3(results, checkpoints):
    released, fixed = results["unpatched"], results[LOAD]
    names = _dense(checkpoints)
    assert {n.split("-")[0] for n in names} == {"llama", "qwen3"}
    for name in names:
        expected_error = REFUSED_CT if "-ct" in name else NOT_IN_MODEL
        assert isinstance(released[name], str) and expected_error in released[name], \
            (name, released[name])
        reference = released[f"ref:{name}"]
        assert isinstance(reference, np.ndarray), (name, reference)
        assert same_bits(fixed[name], reference), (name, fixed[name])


def test_all_three_together(results, checkpoints):
    released, fixed = results["unpatched"], results["all"]
    for name in [k for k in checkpoints if not k.startswith("ref:")]:
        reference = released["dsv3-inv-fp8" if name.startswith("dsv3") else f"ref:{name}"]
        assert same_bits(fixed[name], reference), (name, fixed[name])


def _convert(python, root, src, dst):
    proc = subprocess.run([str(python), "-m", "mlx_lm", "convert", "--hf-path", str(src),
                           "--mlx-path", str(dst), "--dtype", "bfloat16"],
                          capture_output=True, text=True, env=peer_mod.env(root),
                          cwd=dst.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((dst / "config.json").read_text())


def test_convert_drops_the_fp8_quantization_config(peer, trees, checkpoints, tmp_path):
    python, _ = peer
    inv = checkpoints["dsv3-inv-fp8"]
    stale = json.loads((inv / "config.json").read_text())["quantization_config"]
    released = _convert(python, trees["unpatched"], inv, tmp_path / "released")
    assert released.get("quantization_config") == stale   # the bug: BF16 weights, FP8 config
    for tree in (CONVERT, "all"):
        config = _convert(python, trees[tree], inv, tmp_path / tree)
        assert "quantization_config" not in config, tree
        assert not any("scale" in k for k in json.loads(
            (tmp_path / tree / "model.safetensors.index.json").read_text())["weight_map"])
    # load-fp8 alone already drops it for what it dequantizes (here compressed-tensors)
    config = _convert(python, trees[LOAD], checkpoints["dsv3-plain-ct"], tmp_path / "ct")
    assert "quantization_config" not in config
    out = logits(python, trees["unpatched"], {"converted": tmp_path / CONVERT,
                                             "reference": inv}, tmp_path / "logits")
    assert same_bits(out["converted"], out["reference"])   # and the conversion is exact


MOE = r"""
import importlib.util, json, os, sys
from pathlib import Path
assert importlib.util.find_spec("scalefix") is None, "scalefix is importable here"
import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm import utils
from mlx_lm.models import qwen3_moe
assert utils.__file__.startswith(sys.argv[1]), utils.__file__
config = dict(model_type="qwen3_moe", hidden_size=192, num_hidden_layers=2, head_dim=48,
              intermediate_size=320, moe_intermediate_size=160, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=128, decoder_sparse_step=1,
              mlp_only_layers=[], num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
              max_position_embeddings=512, rope_theta=1e4, tie_word_embeddings=False)
mx.random.seed(3)
model = qwen3_moe.Model(qwen3_moe.ModelArgs.from_dict(config))
fp8, bf16 = {}, {}
for k, v in tree_flatten(model.parameters()):   # back to the per-expert Hugging Face names
    parts = {k: v} if ".switch_mlp." not in k else {
        k.replace("switch_mlp", f"experts.{e}"): v[e] for e in range(v.shape[0])}
    for k, v in parts.items():
        if k.endswith("proj.weight"):              # ragged 128-blocks: 192, 320, 160
            m, n = v.shape
            s = mx.random.uniform(1e-3, 1e-2, ((m + 127) // 128, (n + 127) // 128))
            full = mx.repeat(mx.repeat(s, 128, 0), 128, 1)[:m, :n]
            fp8[k], fp8[k + "_scale_inv"] = mx.to_fp8(v / full), s
            bf16[k] = (mx.from_fp8(fp8[k], dtype=mx.bfloat16) * full).astype(mx.bfloat16)
        else:
            fp8[k] = bf16[k] = v.astype(mx.bfloat16)
out = Path(sys.argv[2])
for name, tensors, extra in (("fp8", fp8, {"quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128]}}), ("bf16", bf16, {})):
    (out / name).mkdir()
    mx.save_safetensors(str(out / name / "model.safetensors"), tensors)
    (out / name / "config.json").write_text(json.dumps({**config, **extra}))
twin = dict(tree_flatten(utils.load_model(out / "bf16")[0].parameters()))
try:
    loaded = dict(tree_flatten(utils.load_model(out / "fp8")[0].parameters()))
except ValueError as exc:
    print("RESULT " + json.dumps(str(exc)))
else:
    same = loaded.keys() == twin.keys() and all(
        loaded[k].dtype == twin[k].dtype and mx.array_equal(loaded[k], twin[k]).item()
        for k in twin)
    print("RESULT " + json.dumps({"stacked": "model.layers.1.mlp.switch_mlp.up_proj.weight"
                                  in loaded, "same": same}))
"""


def test_load_fp8_qwen3_moe_experts_stack(peer, trees, tmp_path):
    """The experts are dequantized before sanitize stacks them. Parameters, not logits: the
    CPU backend runs the MoE gather-matmul in float32 only (see make_tiny.py)."""
    python, _ = peer
    results = {}
    for tree in ("unpatched", LOAD):
        out = tmp_path / tree.replace("/", "_")
        out.mkdir()
        proc = subprocess.run([str(python), "-c", MOE, str(trees[tree]), str(out)],
                              capture_output=True, text=True, cwd=out,
                              env=peer_mod.env(trees[tree]))
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        results[tree] = json.loads(lines[-1][len("RESULT "):])
    assert NOT_IN_MODEL in results["unpatched"]
    assert results[LOAD] == {"stacked": True, "same": True}
