"""Real disks and real runs: the space preflight, the disk filling up mid-run (ENOSPC), SIGTERM
and SIGINT during a rewrite, and JSON nested or sized to break the parser.

The disk-full tests run on a real small filesystem where this machine allows one (a tmpfs in a
private mount namespace, see tests/support/small_disk.py) and on the fake disk of
tests/support/fake_disk always, so the path CI takes without CAP_SYS_ADMIN is exercised here too.
"""

import json
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from scalefix.cli import main
from scalefix.errors import ScalefixError
from scalefix.formats.jsonio import MAX_DEPTH, parse_json, read_json
from scalefix.rewrite import space

from tests.support.checkpoint import same_tree
from tests.support.fixtures import big_fp8_source, dsv4_tiny_model
from tests.support.killing import kill_after_first_shard, signal_when
from tests.support.small_disk import available_mode, run_session

MiB = 1 << 20
SCALEFIX = [sys.executable, "-m", "scalefix"]
SIZE_RE = r"([\d.]+ [KMGT]?B)"


def _bytes(human: str) -> float:
    number, unit = human.split()
    return float(number) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]


_MODE = None


@pytest.fixture(params=["real", "injected"])
def disk_mode(request) -> str:
    """'real': the most real small disk this machine allows (a warning says when that is the
    fake one); 'injected': the fake disk, always."""
    global _MODE
    if request.param == "injected":
        return "injected"
    if _MODE is None:
        _MODE = available_mode()
    if _MODE == "injected":
        warnings.warn("no tmpfs can be mounted here (no user namespace, no CAP_SYS_ADMIN): the "
                      "'real' disk tests ran on the fake disk (tests/support/fake_disk)")
    request.node.user_properties.append(("small_disk", _MODE))
    print(f"small disk: {_MODE}")
    return _MODE


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A 3-shard FP8 bundle (25 MB of BF16 out, 12 output shards of 2 MB with --max-shard-size
    4MB) and its reference rewrite on the ordinary disk."""
    root = tmp_path_factory.mktemp("sources")
    src = big_fp8_source(root / "src", shards=3, rows=512, cols=2048)
    assert main(["rewrite", str(src), "--out", str(root / "reference"), "--max-shard-size", "4MB",
                 "--quiet"]) == 0
    single = src / "model-00001-of-00003.safetensors"
    assert main(["rewrite", str(single), "--out", str(root / "reference.safetensors"),
                 "--quiet"]) == 0
    return root


AFFINE = ["--to", "mlx-affine", "--max-shard-size", "1MB"]


@pytest.fixture(scope="module")
def dsv4(tmp_path_factory):
    """A DeepSeek-V4-layout checkpoint whose MLX bundle is 19 MB in 28 shards, and that
    bundle written on the ordinary disk."""
    pytest.importorskip("mlx.core")
    root = tmp_path_factory.mktemp("dsv4")
    fx = dsv4_tiny_model(root / "src", num_hidden_layers=4, hidden_size=256,
                         moe_intermediate_size=512, n_routed_experts=16)
    assert main(["rewrite", str(fx.path), *AFFINE, "--out", str(root / "reference"),
                 "--quiet"]) == 0
    return root


def _modes(sources: Path, dsv4: Path) -> dict[str, list[str]]:
    src = sources / "src"
    return {"dequant": [str(src), "--max-shard-size", "4MB"],
            "rename": [str(src), "--rename-scales", "weight_scale"],
            "single.safetensors": [str(src / "model-00001-of-00003.safetensors")],
            "mlx-affine": [str(dsv4 / "src"), *AFFINE]}


def _one_line(result: dict) -> str:
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, result["stderr"]
    assert "Traceback" not in result["stderr"] and "internal error" not in result["stderr"]
    return lines[0]


def _refusal(result: dict, dst: Path) -> tuple[float, float]:
    """Check a preflight refusal line; return (needed, free) in bytes."""
    assert result["rc"] == 2, result
    line = _one_line(result)
    assert line.startswith(f"scalefix: error: {dst}: not enough free space"), line
    assert "--no-space-check" in line
    needed, free = re.search(f"needs {SIZE_RE}, its filesystem has {SIZE_RE} free", line).groups()
    assert _bytes(needed) > _bytes(free), line
    return _bytes(needed), _bytes(free)


def test_preflight_refuses_every_mode_on_a_destination_too_small(sources, dsv4, disk_mode,
                                                                   tmp_path):
    """4 MiB of disk; every mode's output is bigger: refused up front, nothing written."""
    mnt = tmp_path / "mnt"
    cases = _modes(sources, dsv4)
    steps = [{"size": 4 * MiB}]
    for name, args in cases.items():
        steps.append({"argv": SCALEFIX + ["rewrite", *args, "--out", str(mnt / name), "--quiet"]})
    steps.append({"list": str(mnt)})
    *results, left = run_session(disk_mode, mnt, steps)
    for name, result in zip(cases, results):
        needed, free = _refusal(result, mnt / name)
        assert free <= 4 * MiB, (name, free)
    assert left == [], "a refused run writes nothing"


def test_estimate_covers_what_is_written(sources, dsv4, tmp_path):
    """The preflight's figure (``--json`` disk_needed) is at least what each mode writes, and
    not so far above it that a destination with room would be refused."""
    for name, args in _modes(sources, dsv4).items():
        dst = tmp_path / name
        proc = subprocess.run(SCALEFIX + ["rewrite", *args, "--out", str(dst), "--json"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        needed = json.loads(proc.stdout)["disk_needed"]
        files = [dst] if dst.is_file() else [p for p in dst.rglob("*") if p.is_file()]
        written = sum(-(-p.stat().st_size // 4096) * 4096 for p in files)
        assert written <= needed <= space.with_margin(written) + len(files) * 8192, \
            (name, written, needed)


def _fill_then_resume(disk_mode: str, cmd: list[str], dst: Path, small: int, roomy: int,
                      out: Path, between: tuple = ()) -> list:
    """On a disk of ``small`` bytes at DST's parent, run ``cmd`` with the preflight bypassed
    and list DST's staging (or parent, for a single file); give the disk ``roomy`` bytes, run
    the commands ``between``, rerun with --resume and copy DST to ``out``. Returns the full
    run, the listing, the ``between`` runs and the resumed run."""
    listed = dst.parent if dst.suffix == ".safetensors" else \
        dst.parent / f".{dst.name}.scalefix-partial"
    return run_session(disk_mode, dst.parent, [
        {"size": small}, {"argv": cmd + ["--no-space-check"]}, {"list": str(listed)},
        {"size": roomy}, *[{"argv": argv} for argv in between], {"argv": cmd + ["--resume"]},
        {"copy": [str(dst), str(out)]}])


def test_disk_full_mid_run_then_resume_is_byte_identical(sources, disk_mode, tmp_path):
    """10 MiB for 25 MB of output, preflight bypassed: exit 2 with one line naming DST, the
    finished shards kept (unfinished ones removed) and how to remove them. On a 27 MiB disk a
    fresh run is refused but --resume counts only what is left, finishes, and equals the
    reference byte for byte."""
    mnt = tmp_path / "mnt"
    dst, staging, other = mnt / "dst", mnt / ".dst.scalefix-partial", mnt / "other"
    args = [str(sources / "src"), "--max-shard-size", "4MB", "--quiet"]
    full, listing, fresh, resumed = _fill_then_resume(
        disk_mode, SCALEFIX + ["rewrite", *args, "--out", str(dst)], dst, 10 * MiB, 27 * MiB,
        tmp_path / "out", between=[SCALEFIX + ["rewrite", *args, "--out", str(other)]])
    assert full["rc"] == 2, full
    line = _one_line(full)
    done = [n for n in listing if n.endswith(".done")]
    assert 1 <= len(done) < 12, listing
    assert not any(n.endswith(".tmp") for n in listing), listing
    assert line.startswith(f"scalefix: error: {dst}: No space left on device"), line
    assert f"{len(done)} finished shard(s)" in line and f"kept in {staging}" in line, line
    assert "--resume" in line and f"rm -rf {staging}" in line, line

    _refusal(fresh, other)
    assert resumed["rc"] == 0, resumed
    assert f"reused {len(done)} finished shard(s)" in resumed["stdout"]
    same_tree(sources / "reference", tmp_path / "out")


def test_disk_full_single_file_removes_the_partial(sources, disk_mode, tmp_path):
    """A single file has no staging directory: the partial file is removed and the line says
    so; once there is room the rerun equals the reference."""
    dst = tmp_path / "mnt" / "one.safetensors"
    cmd = SCALEFIX + ["rewrite", str(sources / "src" / "model-00001-of-00003.safetensors"),
                      "--out", str(dst), "--quiet"]
    full, listing, again = _fill_then_resume(disk_mode, cmd, dst, 4 * MiB, 16 * MiB,
                                             tmp_path / "out.safetensors")
    assert full["rc"] == 2, full
    line = _one_line(full)
    assert line.startswith(f"scalefix: error: {dst}: No space left on device"), line
    assert "the partial file was removed" in line
    assert listing == []
    assert again["rc"] == 0, again
    assert (tmp_path / "out.safetensors").read_bytes() == \
        (sources / "reference.safetensors").read_bytes()


@pytest.mark.slow
def test_disk_full_mlx_affine_then_resume(dsv4, disk_mode, tmp_path):
    """The MLX writer (buffered files, not the shard writer) on a full disk: the same line,
    and --resume equals an uninterrupted run."""
    dst, staging = tmp_path / "mnt" / "dst", tmp_path / "mnt" / ".dst.scalefix-partial"
    cmd = SCALEFIX + ["rewrite", str(dsv4 / "src"), *AFFINE, "--quiet", "--out", str(dst)]
    full, listing, resumed = _fill_then_resume(disk_mode, cmd, dst, 6 * MiB, 64 * MiB,
                                               tmp_path / "out")
    assert full["rc"] == 2, full
    line = _one_line(full)
    done = [n for n in listing if n.endswith(".done")]
    assert done and not any(n.endswith(".tmp") for n in listing), listing
    assert f"{len(done)} finished shard(s)" in line and f"rm -rf {staging}" in line, line
    assert resumed["rc"] == 0, resumed
    same_tree(dsv4 / "reference", tmp_path / "out")


# -- signals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """24 output shards of 4 MB (--max-shard-size 8MB), as the kill -9 tests use, and the
    uninterrupted result."""
    root = tmp_path_factory.mktemp("big")
    src = big_fp8_source(root / "src")
    assert main(["rewrite", str(src), "--out", str(root / "reference"), "--max-shard-size",
                 "8MB", "--quiet"]) == 0
    return root


def _signalled_line(proc, sig: int, dst: Path, staging: Path) -> str:
    assert proc.returncode == 128 + sig, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"scalefix: stopped by {signal.Signals(sig).name}: {dst} not written"),\
        line
    assert f"kept in {staging}" in line and "--resume" in line and f"rm -rf {staging}" in line
    return line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_then_resume_is_byte_identical(big, tmp_path, sig):
    """SIGTERM (143) / SIGINT (130) once a shard is finished: one line saying what is kept and
    how to remove it; no DST, no unfinished shard; --resume equals the uninterrupted run."""
    dst, staging = tmp_path / "dst", tmp_path / ".dst.scalefix-partial"
    cmd = SCALEFIX + ["rewrite", str(big / "src"), "--out", str(dst), "--max-shard-size", "8MB",
                      "--workers", "1", "--quiet"]
    proc = kill_after_first_shard(cmd, staging, sig=sig)
    line = _signalled_line(proc, sig, dst, staging)
    assert not dst.exists()
    names = sorted(p.name for p in staging.iterdir())
    done = [n for n in names if n.endswith(".done")]
    assert 1 <= len(done) < 24 and not any(n.endswith(".tmp") for n in names), names
    assert f"{len(done)} finished shard(s)" in line
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len(done)} finished shard(s)" in resumed.stdout
    same_tree(big / "reference", dst)


@pytest.mark.slow
def test_sigterm_mlx_affine_then_resume_is_byte_identical(dsv4, tmp_path):
    """The MLX writer stops on SIGTERM too (its unfinished shard removed), and resumes."""
    dst, staging = tmp_path / "dst", tmp_path / ".dst.scalefix-partial"
    cmd = SCALEFIX + ["rewrite", str(dsv4 / "src"), *AFFINE, "--workers", "1", "--quiet",
                      "--out", str(dst)]
    proc = kill_after_first_shard(cmd, staging, sig=signal.SIGTERM)
    _signalled_line(proc, signal.SIGTERM, dst, staging)
    assert not any(p.name.endswith(".tmp") for p in staging.iterdir())
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    same_tree(dsv4 / "reference", dst)


def test_sigint_single_file_removes_the_partial(big, tmp_path):
    src = big / "src" / "model-00001-of-00006.safetensors"
    dst = tmp_path / "one.safetensors"
    partial = tmp_path / ".one.safetensors.scalefix-partial"
    cmd = SCALEFIX + ["rewrite", str(src), "--out", str(dst), "--workers", "1", "--quiet"]
    proc = signal_when(cmd, partial.exists, signal.SIGINT)
    assert proc.returncode == 130, proc
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"scalefix: stopped by SIGINT: {dst} not written; nothing kept (the "
                    "partial file was removed)")
    assert list(tmp_path.iterdir()) == []
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert main(["rewrite", str(src), "--out", str(tmp_path / "ref.safetensors"),
                 "--quiet"]) == 0
    assert dst.read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_sigterm_in_any_command_exits_143_with_one_line():
    """A command busy when SIGTERM arrives (here `status`, made to signal itself) stops with
    one line and 143; Python's default would end it silently, without cleanup."""
    code = ("import os, signal, time\n"
            "from scalefix import cli\n"
            "from scalefix.commands import status\n"
            "def busy(args):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n"
            "status.run = busy\n"
            "raise SystemExit(cli.main(['status']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 143, proc
    assert proc.stderr == "scalefix: stopped by SIGTERM\n" and proc.stdout == ""


def test_handlers_are_restored_after_main(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["status", "--no-arm"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- JSON bounds -----------------------------------------------------------------------------


def _nested(levels: int) -> str:
    return '{"a": ' * (levels - 1) + "[]" + "}" * (levels - 1)


def test_json_depth_bound_is_exact(tmp_path):
    assert parse_json(_nested(MAX_DEPTH), "x") is not None
    for levels in (MAX_DEPTH + 1, 900, 5000):  # parsed then walked, or RecursionError
        with pytest.raises(ScalefixError, match=f"x: doc is nested deeper than {MAX_DEPTH}"):
            parse_json(_nested(levels), "x", "doc")


def test_json_size_bound_refuses_unread(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"k": "' + "v" * 100 + '"}')
    assert read_json(path, limit=path.stat().st_size) == {"k": "v" * 100}
    with pytest.raises(ScalefixError, match="larger than the"):
        read_json(path, "config", limit=path.stat().st_size - 1)
