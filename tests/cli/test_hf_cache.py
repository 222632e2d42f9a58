"""Models where users have them: the Hugging Face cache (snapshot links into blobs/) and hub
ids. inspect / rewrite / verify by snapshot path and by id, the runtime hook through snapshot
links (scale in another shard), mlx-lm loading ``snapshot_download(id, local_files_only=True)``,
and a hostile index still refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scalefix.cli import main

from tests.support.fixtures import VARIANTS
from tests.support.hf_cache import into_cache, links_in
from tests.support.mlx_logits import logits as mlx_logits, same_bits
from tests.support.tiny_llama import llama_tiny_fp8

REPO = "acme/Tiny-FP8"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A DeepSeek-V3-style 2-shard FP8 checkpoint (a scale in the other shard) in a private
    HF cache, found through HF_HOME; the working directory is a scratch directory."""
    fx = VARIANTS["dsv3"](tmp_path / "plain")
    (fx.path / "tokenizer.json").write_text('{"model": "tiny"}')
    (fx.path / "extra").mkdir()
    (fx.path / "extra" / "notes.txt").write_text("copied as a real file")
    home = tmp_path / "hf"
    snapshot = into_cache(fx.path, home / "hub", REPO)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants  # it reads the environment once, at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return fx, snapshot, work


def test_cache_layout_is_the_real_one_and_env_is_honoured(hub, tmp_path):
    from huggingface_hub import snapshot_download
    _, snapshot, work = hub
    # the hub library itself finds it, offline
    assert snapshot_download(REPO, local_files_only=True) == str(snapshot)
    assert all(os.readlink(p).startswith("../../blobs/") for p in snapshot.iterdir()
               if p.is_symlink())
    # a fresh process finds it through HF_HOME alone, and through HF_HUB_CACHE alone
    for env in ({"HF_HOME": str(tmp_path / "hf")}, {"HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
                                                   "HF_HOME": str(tmp_path / "elsewhere")}):
        proc = subprocess.run([sys.executable, "-m", "scalefix", "inspect", REPO, "--json"],
                              capture_output=True, text=True, cwd=work,
                              env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["path"] == str(snapshot)


@pytest.mark.parametrize("how", ["snapshot", "id", "id@rev", "id@main"])
def test_inspect_by_snapshot_path_and_by_id(hub, inspect_json, how):
    fx, snapshot, _ = hub
    arg = {"snapshot": str(snapshot), "id": REPO, "id@main": REPO + "@main",
           "id@rev": f"{REPO}@{snapshot.name}"}[how]
    code, report = inspect_json(arg)
    assert code == 0
    assert len(report["quantized"]) == len(fx.quantized)
    assert [p["weight"] for p in report["cross_shard_pairs"]] == fx.cross_shard


def test_rewrite_by_id_is_bit_exact_holds_no_links_and_lands_in_cwd(hub, tmp_path):
    fx, snapshot, work = hub
    assert main(["rewrite", REPO, "--quiet"]) == 0
    dst = work / "Tiny-FP8-bf16"  # in the working directory, never inside the cache
    assert dst.is_dir() and not links_in(dst)
    assert (dst / "extra" / "notes.txt").read_text() == "copied as a real file"
    assert json.loads((dst / "tokenizer.json").read_text()) == {"model": "tiny"}
    plain = tmp_path / "plain-bf16"
    assert main(["rewrite", str(fx.path), "--out", str(plain), "--quiet"]) == 0
    for f in sorted(plain.rglob("*")):  # byte for byte what the plain directory gives
        if f.is_file():
            assert (dst / f.relative_to(plain)).read_bytes() == f.read_bytes(), f
    assert main(["verify", REPO, str(dst)]) == 0
    assert main(["verify", str(snapshot), str(dst)]) == 0
    # a snapshot path given directly also writes to the working directory
    assert main(["rewrite", str(snapshot), "--out", str(work / "again"), "--quiet"]) == 0
    assert not any(p.name.endswith("-bf16") for p in snapshot.parent.parent.rglob("*"))


def test_rewrite_of_a_snapshot_path_defaults_to_cwd(hub):
    _, snapshot, work = hub
    assert main(["rewrite", str(snapshot), "--quiet", "--dry-run"]) == 0
    assert main(["rewrite", str(snapshot), "--quiet"]) == 0
    assert (work / "Tiny-FP8-bf16").is_dir()


def test_verify_dst_by_id(hub, tmp_path, monkeypatch):
    fx, _, _ = hub
    fixed = tmp_path / "fixed"
    assert main(["rewrite", str(fx.path), "--out", str(fixed), "--quiet"]) == 0
    into_cache(fixed, tmp_path / "hf" / "hub", "acme/Tiny-BF16")
    assert main(["verify", REPO, "acme/Tiny-BF16"]) == 0


def test_local_path_wins_over_a_hub_id(hub, inspect_json):
    fx, _, work = hub
    local = work / "acme" / "Tiny-FP8"
    local.mkdir(parents=True)
    VARIANTS["flux"](local)  # a different checkpoint under the same name
    code, report = inspect_json("acme/Tiny-FP8")
    assert code == 0 and report["path"].startswith("acme/Tiny-FP8")
    assert {q["weight"] for q in report["quantized"]} == {
        "double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"}


def test_model_not_in_cache_one_line_with_the_download_command(hub, capsys):
    assert main(["inspect", "acme/Missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hf download acme/Missing" in err[0]
    assert main(["rewrite", "acme/Missing@v2"]) == 2
    assert "hf download acme/Missing --revision v2" in capsys.readouterr().err
    assert main(["inspect", "no-slash-here"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("hostile", ["../x.safetensors", "/etc/passwd",
                                     "sub/../../x.safetensors"])
def test_hostile_index_in_a_snapshot_is_refused(hub, tmp_path, capsys, hostile):
    fx, _, _ = hub
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in fx.path.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = hostile
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    into_cache(bad, tmp_path / "hf" / "hub", "acme/Bad")
    for command in (["inspect", "acme/Bad"], ["rewrite", "acme/Bad"],
                    ["verify", "acme/Bad", str(fx.path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "leaves the bundle directory" in err[0], err


mx = pytest.importorskip("mlx.core")


def test_mx_load_through_snapshot_links_is_exact(hub):
    from scalefix.hooks import mlx_load
    from tests.support.mlx_checks import bits, oracle_bits
    fx, snapshot, _ = hub
    mlx_load.apply(mx)
    try:
        got = {}
        for shard in sorted(snapshot.glob("*.safetensors")):
            got.update(mx.load(str(shard)))
    finally:
        mlx_load.revert(mx)
    for weight, want in fx.quantized.items():
        assert got[weight].dtype == mx.bfloat16, weight
        assert np.array_equal(bits(got[weight]), oracle_bits(want.oracle)), weight
    assert not {w.scale for w in fx.quantized.values()} & set(got)


@pytest.mark.peers
def test_mlx_lm_loads_a_cached_model_by_id_under_scalefix(tmp_path, monkeypatch):
    pytest.importorskip("mlx_lm")
    fx = llama_tiny_fp8(tmp_path / "llama")
    home = tmp_path / "hf"
    into_cache(fx.path, home / "hub", "acme/Llama-Tiny-FP8")
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    monkeypatch.setenv("HF_HOME", str(home))
    bf16 = tmp_path / "bf16"
    assert main(["rewrite", str(fx.path), "--out", str(bf16), "--quiet"]) == 0
    proc, reference = mlx_logits(bf16, tmp_path / "ref.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.isfinite(reference).all()
    proc, raw = mlx_logits("acme/Llama-Tiny-FP8", tmp_path / "raw.npy", **env)
    assert proc.returncode != 0  # plain mlx-lm: llama has no FP8 path
    snapshot = ("from huggingface_hub import snapshot_download\n"
                "sys.argv[1] = snapshot_download(sys.argv[1], local_files_only=True)\n")
    proc, fixed = mlx_logits("acme/Llama-Tiny-FP8", tmp_path / "fixed.npy",
                             "import scalefix.auto\n" + snapshot, **env)
    assert proc.returncode == 0, proc.stderr
    assert same_bits(fixed, reference)
    assert "scalefix" not in proc.stderr  # nothing to complain about
    proc, by_id = mlx_logits("acme/Llama-Tiny-FP8", tmp_path / "id.npy", "import scalefix.auto",
                             **env)  # mlx-lm resolves the id itself
    assert proc.returncode == 0, proc.stderr
    assert same_bits(by_id, reference)
