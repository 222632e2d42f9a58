"""``scalefix rewrite``: bit-exact BF16 for every variant, read back by the real safetensors
loader; drops, copies, configs, atomicity, resume, refusals."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from scalefix.cli import main

from tests.support.checkpoint import same_tree
from tests.support.fixtures import VARIANTS, big_fp8_source
from tests.support.killing import kill_after_first_shard
from tests.support.malformed import CASES as MALFORMED


def load_bundle(path: Path) -> dict:
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def tree_digest(path: Path) -> dict:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in files}


def rewrite(*args) -> int:
    return main(["rewrite", *map(str, args), "--quiet"])


@pytest.fixture(params=sorted(VARIANTS))
def variant(request, tmp_path):
    return request.param, VARIANTS[request.param](tmp_path / "src" / request.param)


def test_rewrite_is_bit_exact_and_complete(variant, tmp_path, capsys):
    name, fx = variant
    before = tree_digest(fx.path)
    dst = tmp_path / ("out.safetensors" if fx.path.is_file() else "out")
    assert rewrite(fx.path, "--out", dst) == 0
    assert tree_digest(fx.path) == before  # the source is never modified
    got = load_bundle(dst)
    src = load_bundle(fx.path)
    for weight, want in fx.quantized.items():
        out_name = want.output_name or weight
        assert got[out_name].dtype == torch.bfloat16
        assert torch.equal(got[out_name].view(torch.int16), want.oracle.view(torch.int16)), weight
    dropped = set(fx.activation_scales) | set(fx.markers) | set(fx.orphans) | \
        {w.scale for w in fx.quantized.values()}
    assert not dropped & set(got)
    for plain in fx.plain:  # copied byte for byte, dtype kept
        assert got[plain].dtype == src[plain].dtype
        assert torch.equal(got[plain].view(torch.uint8), src[plain].view(torch.uint8))
    expected_names = {w.output_name or k for k, w in fx.quantized.items()} | \
        (set(src) - dropped - set(fx.quantized))
    assert set(got) == expected_names
    if (fx.path / "config.json").is_file():
        config = json.loads((dst / "config.json").read_text())
        assert "quantization_config" not in config
        assert "quantization_config" not in config.get("text_config", {})
        assert config["torch_dtype"] == "bfloat16"
    capsys.readouterr()
    assert main(["verify", str(fx.path), str(dst)]) == 0, capsys.readouterr().out
    assert main(["inspect", str(dst), "--check"]) == 0, capsys.readouterr().out


def test_index_rebuilt_with_total_size(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert rewrite(fx.path, "--out", tmp_path / "o", "--max-shard-size", "2MB") == 0
    index = json.loads((tmp_path / "o" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((tmp_path / "o" / s).is_file() for s in shards)
    data_bytes = 0
    for s in shards:
        with safe_open(str(tmp_path / "o" / s), "pt") as f:
            assert set(f.keys()) == {k for k, v in index["weight_map"].items() if v == s}
            data_bytes += sum(f.get_slice(k).get_shape() and
                              f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                              for k in f.keys())
    assert index["metadata"]["total_size"] == data_bytes
    assert not any(p.name.startswith(".") for p in (tmp_path / "o").iterdir())


def test_single_file_default_destination_and_metadata(tmp_path):
    fx = VARIANTS["flux"](tmp_path)
    assert rewrite(fx.path) == 0
    out = fx.path.with_name("flux2-fp8-bf16.safetensors")
    assert out.is_file()
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_directory_default_destination_other_files_and_hf_quant_config(tmp_path):
    fx = VARIANTS["qwen3-bf16-scale"](tmp_path / "qwen")
    (fx.path / "tokenizer.json").write_text("{}")
    (fx.path / "generation_config.json").write_text("{}")
    (fx.path / "modeling_x.py").write_text("# custom code\n")
    (fx.path / "hf_quant_config.json").write_text('{"quantization": {"quant_algo": "FP8"}}')
    (fx.path / "inference").mkdir()
    (fx.path / "inference" / "kernel.py").write_text("# kernel\n")
    assert rewrite(fx.path) == 0
    dst = tmp_path / "qwen-bf16"
    names = {p.name for p in dst.iterdir()}
    assert {"tokenizer.json", "generation_config.json", "modeling_x.py", "inference",
            "config.json", "model.safetensors"} == names
    config = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in config["text_config"]


@pytest.mark.parametrize("out, torch_dtype", [("f16", torch.float16), ("f32", torch.float32)])
def test_other_dtypes(tmp_path, out, torch_dtype):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert rewrite(fx.path, "--out", tmp_path / "o", "--dtype", out) == 0
    got, src = load_bundle(tmp_path / "o"), load_bundle(fx.path)
    from tests.support.fixtures import expand
    for weight, want in fx.quantized.items():
        ref = (src[weight].to(torch.float32) *
               expand(src[want.scale], src[weight].shape, want.block)).to(torch_dtype)
        assert torch.equal(got[weight], ref)
    assert got["model.layers.0.mlp.gate.e_score_correction_bias"].dtype == torch.float32


def test_nothing_to_do_on_clean_checkpoint(tmp_path, capsys):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert rewrite(fx.path, "--out", tmp_path / "o") == 0
    capsys.readouterr()
    assert rewrite(tmp_path / "o") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not (tmp_path / "o-bf16").exists()


def test_dry_run_writes_nothing(tmp_path, capsys):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert rewrite(fx.path, "--dry-run") == 0
    assert "would write" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_json_summary(tmp_path, capsys):
    fx = VARIANTS["ct-tensor"](tmp_path / "m")
    assert main(["rewrite", str(fx.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["dequantized"] == {"fp8-tensor": 2}
    assert summary["counts"]["dropped"] == {"activation scale": 2, "scale (applied)": 2}


@pytest.mark.parametrize("where", ["same", "inside"])
def test_destination_inside_source_refused(tmp_path, where, capsys):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    dst = fx.path if where == "same" else fx.path / "sub"
    assert rewrite(fx.path, "--out", dst) == 2
    assert "inside the source" in capsys.readouterr().err


def test_existing_destination_refused(tmp_path, capsys):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    (tmp_path / "o").mkdir()
    assert rewrite(fx.path, "--out", tmp_path / "o") == 2
    assert "already exists" in capsys.readouterr().err


def _rewrite_bad(tmp_path, src: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefix", "rewrite", str(src), "--out",
                           str(tmp_path / "dst")], capture_output=True, text=True)


MALFORMED_FOR_REWRITE = sorted(set(MALFORMED) - {"not_there"})


@pytest.mark.parametrize("case", MALFORMED_FOR_REWRITE)
def test_malformed_inputs_leave_no_destination(case, tmp_path):
    src, expected = MALFORMED[case](tmp_path)
    before = tree_digest(src)
    proc = _rewrite_bad(tmp_path, src)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc
    assert "Traceback" not in proc.stderr
    assert tree_digest(src) == before
    assert not (tmp_path / "dst").exists() and not (tmp_path / ".dst.scalefix-partial").exists()


def test_shard_missing_from_index_refused(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    save_file({"extra.weight": torch.zeros(4)}, str(fx.path / "model-00003-of-00003.safetensors"))
    proc = _rewrite_bad(tmp_path, fx.path)
    assert proc.returncode == 2 and "missing from the index" in proc.stderr
    assert not (tmp_path / "dst").exists()


def _killed_run(tmp_path: Path, src: Path) -> tuple[list, Path, Path]:
    """Start a rewrite, SIGKILL it once a shard is finished; return (cmd, dst, staging)."""
    dst = tmp_path / "dst"
    staging = tmp_path / ".dst.scalefix-partial"
    cmd = [sys.executable, "-m", "scalefix", "rewrite", str(src), "--out", str(dst),
           "--max-shard-size", "8MB", "--workers", "1", "--quiet"]
    kill_after_first_shard(cmd, staging)
    return cmd, dst, staging


def test_kill_then_resume_equals_uninterrupted_run(tmp_path):
    src = big_fp8_source(tmp_path / "src")
    assert rewrite(src, "--out", tmp_path / "reference", "--max-shard-size", "8MB") == 0
    cmd, dst, staging = _killed_run(tmp_path, src)
    assert not dst.exists(), "a killed run must not leave a complete-looking DST"
    done = [p for p in staging.iterdir() if p.name.endswith(".done")]
    assert 1 <= len(done) < 12
    assert not (staging / "model.safetensors.index.json").exists()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len(done)} finished shard(s)" in resumed.stdout
    assert not staging.exists()
    same_tree(tmp_path / "reference", dst)


def test_killed_without_resume_starts_over(tmp_path):
    src = big_fp8_source(tmp_path / "src")
    assert rewrite(src, "--out", tmp_path / "reference", "--max-shard-size", "8MB") == 0
    cmd, dst, staging = _killed_run(tmp_path, src)
    assert not dst.exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0 and "reused" not in rerun.stdout
    assert "interrupted run" in rerun.stderr
    same_tree(tmp_path / "reference", dst)


def test_resume_rejects_a_damaged_finished_shard(tmp_path):
    src = big_fp8_source(tmp_path / "src")
    assert rewrite(src, "--out", tmp_path / "reference", "--max-shard-size", "8MB") == 0
    cmd, dst, staging = _killed_run(tmp_path, src)
    finished = sorted(p.name[1:-5] for p in staging.iterdir() if p.name.endswith(".done"))
    damaged = staging / finished[0]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len(finished) - 1} finished" in resumed.stdout or len(finished) == 1
    same_tree(tmp_path / "reference", dst)


def test_staging_dir_not_made_by_scalefix_is_refused(tmp_path, capsys):
    src = big_fp8_source(tmp_path / "src", shards=1)
    (tmp_path / ".dst.scalefix-partial").mkdir()
    assert rewrite(src, "--out", tmp_path / "dst") == 2
    assert "not made by scalefix" in capsys.readouterr().err


def test_progress_bar_draws_rate_and_eta_only_when_enabled():
    import io
    from scalefix.rewrite.progress import Progress
    stream = io.StringIO()
    bar = Progress(2_000_000, "rewrite", enabled=True, stream=stream)
    bar.advance(1_000_000)
    bar.advance(1_000_000)
    bar.close()
    out = stream.getvalue()
    assert "100%" in out and "/s" in out and "ETA" in out and out.endswith("\n")
    quiet = io.StringIO()
    Progress(10, "rewrite", stream=quiet).advance(10)  # a StringIO is not a terminal
    assert quiet.getvalue() == ""


def test_single_file_out_must_name_a_safetensors_file(tmp_path, capsys):
    """A single-file source writes one file; an --out without the suffix would be a file
    that mx.load and ComfyUI refuse, so it is refused up front with the fix in the line."""
    fx = VARIANTS["flux"](tmp_path / "src")
    assert fx.path.is_file()
    dst = tmp_path / "flux-bf16"
    assert rewrite(fx.path, "--out", dst) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out flux-bf16.safetensors" in err[0], err
    assert not dst.exists()
    assert rewrite(fx.path, "--out", tmp_path / "flux-bf16.safetensors") == 0
