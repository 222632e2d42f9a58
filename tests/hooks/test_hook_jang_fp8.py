"""The ``jang_fp8`` runtime patch with the real ``jang`` 2.5.50 (``jang convert MODEL -o OUT
-p 8 -m rtn`` on CPU): through ``scalefix run`` and through the sitecustomize drop-in, every
output tensor of every fixture is byte-identical to plain ``jang convert`` of its jang-native
twin (``<weight>_scale_inv`` F32, one shard); without scalefix the traps come out wrong, the
controls the same. Plus: NaN codes, the probe, the status row, the off switch, laziness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.jang_fp8_fixtures import TRAPS, VARIANTS, build, differences, ragged_misread, tensor_bytes
from tests.support.paths import REPO

BIN = Path(sys.executable).parent
JANG = BIN / "jang"
DROP_IN = str(REPO / "sitecustomize_example")
pytestmark = pytest.mark.skipif(not JANG.exists(), reason="jang is not installed here")


def convert(src: Path, out: Path, wrapper=(), **env) -> dict:
    """``jang convert`` (optionally wrapped), every output tensor's bytes."""
    proc = subprocess.run([*wrapper, str(JANG), "convert", str(src), "-o", str(out), "-p", "8",
                           "-m", "rtn"], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "scalefix: jang_fp8" not in proc.stderr, proc.stderr  # nothing left unfixed
    return tensor_bytes(out)


SCALEFIX_RUN = (sys.executable, "-m", "scalefix", "run", "--")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """variant -> (source, plain jang convert of its twin)."""
    root = tmp_path_factory.mktemp("jang-fp8")
    found = {}
    for variant in VARIANTS:
        src, twin = build(variant, root)
        found[variant] = src, convert(twin, root / "out" / f"{variant}-twin")
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_scalefix_run_jang_convert_matches_the_jang_native_twin(cases, variant, tmp_path):
    src, want = cases[variant]
    got = convert(src, tmp_path / "out", SCALEFIX_RUN)
    assert differences(got, want) == []
    assert len(got) > 40


@pytest.mark.parametrize("variant", VARIANTS)
def test_sitecustomize_drop_in_matches_the_twin(cases, variant, tmp_path):
    src, want = cases[variant]
    assert differences(convert(src, tmp_path / "out", PYTHONPATH=DROP_IN), want) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_without_scalefix_the_traps_come_out_wrong_and_the_controls_right(cases, variant,
                                                                         tmp_path):
    src, want = cases[variant]
    plain = differences(convert(src, tmp_path / "out", SCALEFIX_DISABLE="1"), want)
    if variant in TRAPS:
        assert any(d.startswith("differs") and d.endswith("up_proj.weight") for d in plain) or \
            any(d.startswith("extra") and "_scale" in d for d in plain), plain
    else:
        assert plain == []


def test_ct_block_without_scalefix_is_the_trap_the_issue_describes(cases, tmp_path):
    """Unscaled codes quantized (max |w| near 448, not near the real 0.2), and every
    ``weight_scale`` / ``input_scale`` copied or quantized as a weight."""
    src, want = cases["ct-block"]
    plain = convert(src, tmp_path / "out", SCALEFIX_DISABLE="1")
    assert any(n.endswith(".weight_scale") for n in plain)
    assert any(n.endswith(".input_scale") for n in plain)
    assert plain["model.layers.0.mlp.up_proj.scales"] != want["model.layers.0.mlp.up_proj.scales"]


def test_the_off_switch_gives_jang_as_it_is(cases, tmp_path):
    src, want = cases["ct-channel"]
    got = convert(src, tmp_path / "out", SCALEFIX_RUN, SCALEFIX_DISABLE_PATCHES="jang_fp8")
    assert differences(got, want)


def test_ragged_blocks_jang_itself_misplaces_are_placed_right(tmp_path):
    """192 rows over 128-blocks: jang's own block guess (ceil(192 / 2) = 96) misreads even its
    own format; under scalefix the output is jang's conversion of the exact float32 products."""
    src, exact = ragged_misread(tmp_path)
    want = convert(exact, tmp_path / "want")
    assert differences(convert(src, tmp_path / "plain", SCALEFIX_DISABLE="1"), want)
    assert differences(convert(src, tmp_path / "fixed", SCALEFIX_RUN), want) == []


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO)


NAN_CODE = r"""
import json, sys, numpy as np, torch
from safetensors.torch import save_file
path = sys.argv[1]
codes = torch.tensor([[0x7F, 0xFF, 0x80, 0x00, 0x38, 0xB8, 0x7E, 0x01]] * 4, dtype=torch.uint8)
save_file({"w.weight": codes.view(torch.float8_e4m3fn),
           "w.weight_scale": torch.full((4, 1), 0.5, dtype=torch.bfloat16)}, path)
import jang_tools.convert, jang_tools.fp8 as fp8
values = fp8.load_fp8_tensor(path, "w.weight", [4, 8])
direct = fp8.fp8_e4m3_to_float32(codes.numpy())
print(json.dumps({"row": [None if v != v else [v, bool(np.signbit(v))] for v in
                          values[0].tolist()],
                  "direct": [None if v != v else v for v in direct[0].tolist()]}))
"""


def test_nan_codes_decode_as_nan_and_negative_zero_as_jang_has_it(tmp_path):
    path = str(tmp_path / "nan.safetensors")
    fixed = _python("import scalefix.auto\n" + NAN_CODE.replace("sys.argv[1]", repr(path)))
    assert fixed.returncode == 0, fixed.stderr
    got = json.loads(fixed.stdout)
    assert got["row"][:2] == [None, None]                        # 0x7F, 0xFF: NaN
    assert got["row"][2:4] == [[0.0, False], [0.0, False]]       # 0x80 -> +0.0, as jang's
    assert got["row"][4:] == [[0.5, False], [-0.5, True], [224.0, False], [2 ** -10, False]]
    assert got["direct"][:2] == [None, None]
    plain = _python(NAN_CODE.replace("sys.argv[1]", repr(path)))
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["direct"][:2] == [480.0, -480.0]  # the bug


def _status_after(code: str, **env) -> dict:
    proc = _python(code + "\nimport scalefix\nprint(json.dumps({s['name']: s for s in "
                   "scalefix.status()}))", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_lazy_applied_on_import_and_cheap_to_arm():
    status = _status_after("import json, sys, scalefix.auto\n"
                           "assert 'numpy' not in sys.modules and 'jang_tools' not in sys.modules\n"
                           "assert 'scalefix.hooks.jang_fp8' not in sys.modules")
    assert status["jang_fp8"]["state"] == "armed"
    assert status["jang_fp8"]["target"] == "jang_tools.convert"
    status = _status_after("import json, scalefix.auto, jang_tools.convert")
    row = status["jang_fp8"]
    assert (row["state"], row["distribution"], row["version"]) == ("applied", "jang", "2.5.50")


@pytest.mark.parametrize("order", ["arm-then-import", "import-then-arm"])
def test_applies_once_in_both_orders_and_reverts_exactly(order):
    arm, imp = "import scalefix.auto", "import jang_tools.convert as c, jang_tools.fp8 as f"
    first, second = (arm, imp) if order == "arm-then-import" else (imp, arm)
    code = (f"import json\n{first}\n{second}\nimport scalefix\n"
            "names = ('load_fp8_tensor', 'fp8_e4m3_to_float32')\n"
            "current = [c.safe_open] + [getattr(f, n) for n in names]\n"
            "assert all(getattr(x, '__scalefix_patch__', False) for x in current)\n"
            "originals = [x.__wrapped__ for x in current]\n"
            "scalefix.patch_all(); scalefix.patch_all()\n"
            "assert [c.safe_open.__wrapped__] + [getattr(f, n).__wrapped__ for n in names]"
            " == originals\n"
            "scalefix.unpatch_all()\n"
            "assert [c.safe_open] + [getattr(f, n) for n in names] == originals")
    assert _status_after(code)["jang_fp8"]["state"] == "reverted"


def test_a_failing_apply_leaves_jang_working():
    code = ("import json, scalefix.hooks.jang_fp8 as m\n"
            "def boom(module):\n    module.safe_open = None\n    raise RuntimeError('boom')\n"
            "m.apply = boom\nimport scalefix.auto, jang_tools.convert as c\n"
            "assert callable(c.safe_open) and not hasattr(c.safe_open, '__scalefix_patch__')")
    row = _status_after(code)["jang_fp8"]
    assert (row["state"], row["reason"]) == ("failed", "RuntimeError: boom")


def test_probe_reads_the_installed_source(tmp_path):
    """A convert.py without the ``<weight>_scale_inv`` lookup (fixed upstream, or patched on
    disk) is skipped, with the reason."""
    import jang_tools
    copy = tmp_path / "jang_tools"
    copy.mkdir()
    source = Path(jang_tools.__file__).parent
    (copy / "__init__.py").write_text("")
    (copy / "fp8.py").write_bytes((source / "fp8.py").read_bytes())
    (copy / "convert.py").write_text("from safetensors import safe_open\n"
                                     "def convert_model(model_path, output_path):\n"
                                     "    from .fp8 import load_fp8_tensor\n"
                                     "    return _find_scale(model_path)\n")
    row = _status_after("import json, scalefix.auto, jang_tools.convert",
                        PYTHONPATH=str(tmp_path))["jang_fp8"]
    assert row["state"] == "skipped" and "no longer looks FP8 scales up" in row["reason"]


def test_status_counts_the_shards_it_fixed(cases, tmp_path):
    src, _ = cases["inv-cross"]
    code = ("import json, sys, scalefix.auto\nfrom jang_tools.__main__ import main\n"
            f"sys.argv = ['jang', 'convert', {str(src)!r}, '-o', {str(tmp_path / 'o')!r}, "
            "'-p', '8', '-m', 'rtn']\nimport contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main()")
    row = _status_after(code)["jang_fp8"]
    assert row["state"] == "applied"
    assert row["files"]["fixed"] == 1 and row["files"]["unfixed"] == 0  # the weights' shard
    proc = subprocess.run([*SCALEFIX_RUN, sys.executable, "-m", "scalefix", "status"],
                          capture_output=True, text=True)
    assert "jang_fp8" in proc.stdout and "jang_tools.convert" in proc.stdout


UNSCALED = r"""
import sys, torch
from safetensors.torch import save_file
path = sys.argv[1]
save_file({"w.weight": torch.full((4, 8), 0x38, dtype=torch.uint8).view(torch.float8_e4m3fn)},
          path)
import jang_tools.fp8 as fp8, jang_tools.convert
print(fp8.load_fp8_tensor(path, "w.weight", [4, 8])[0, 0])
"""


def test_an_fp8_weight_without_any_scale_is_said_not_silently_read(tmp_path):
    code = "import scalefix.auto\n" + UNSCALED.replace("sys.argv[1]",
                                                       repr(str(tmp_path / "u.safetensors")))
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "1.0", proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "jang_fp8" in line]
    assert len(lines) == 1 and "cannot apply the scales" in lines[0] and "'w.weight'" in lines[0]
    strict = _python(code, SCALEFIX_STRICT="1")
    assert strict.returncode != 0 and "UnfixedCheckpointError" in strict.stderr


OTHER_FORMATS = r"""
import json, sys, numpy as np, torch
from safetensors.torch import save_file
path = sys.argv[1]
gen = torch.Generator().manual_seed(2)
e5 = torch.randint(0, 256, (64, 96), dtype=torch.uint8, generator=gen)
e5[(e5 & 0x7C) == 0x7C] = 0x3C                           # no inf / NaN codes
e4 = torch.randint(0, 256, (64, 96), dtype=torch.uint8, generator=gen)
e4[(e4 & 0x7F) == 0x7F] = 0x3F
s5, s4 = torch.rand(1, 1) * 1e-3, torch.rand(64) * 1e-3
save_file({"a.weight": e5.view(torch.float8_e5m2), "a.weight_scale": s5,
           "b.weight": e4.view(torch.float8_e4m3fn), "b.qscale_weight": s4}, path)
import jang_tools.convert, jang_tools.fp8 as fp8
want = {"a.weight": e5.view(torch.float8_e5m2).float() * s5 + 0.0,
        "b.weight": e4.view(torch.float8_e4m3fn).float() * s4[:, None] + 0.0}
print(json.dumps({n: bool(np.array_equal(fp8.load_fp8_tensor(path, n, [64, 96]).view(np.uint32),
                                         w.numpy().view(np.uint32))) for n, w in want.items()}))
"""


def test_e5m2_and_mistral_channel_scales_are_the_exact_products(tmp_path):
    code = "import scalefix.auto\n" + OTHER_FORMATS.replace(
        "sys.argv[1]", repr(str(tmp_path / "m.safetensors")))
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"a.weight": True, "b.weight": True}
    plain = _python(OTHER_FORMATS.replace("sys.argv[1]", repr(str(tmp_path / "p.safetensors"))))
    assert json.loads(plain.stdout) == {"a.weight": False, "b.weight": False}
