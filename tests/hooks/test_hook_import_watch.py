"""import_watch: wrapt is imported only when a target is, the hooks still fire at the
target's import (or at once for a target already imported), and the finder leaves every
other import alone. Each case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# A tiny package tree the watched imports are made of: a plain target module, a namespace
# package, and a module to reload.
TREE = {
    "sf_target/__init__.py": "",
    "sf_target/core.py": "VALUE = 1\nimport os as _os\nLOADER = __loader__\n",
    "sf_plain.py": "COUNT = [0]\nCOUNT[0] += 1\n",
    "sf_ns/part.py": "X = 2\n",  # sf_ns has no __init__.py: a namespace package
}


@pytest.fixture
def tree(tmp_path):
    for rel, text in TREE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def run(code: str, cwd=None, **env) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, sys
from scalefix.hooks import import_watch as w
calls = []
def hook(module):
    calls.append((module.__name__, getattr(module, "VALUE", None), "wrapt" in sys.modules))
"""


def test_finder_arms_before_import_and_hook_fires_after_the_module_executed(tree):
    out = run(PRELUDE + """
w.when_imported("sf_target.core", hook)
armed = {"watching": w.watching(), "wrapt": "wrapt" in sys.modules, "calls": list(calls)}
import sf_target.core as core
print(json.dumps({"armed": armed, "calls": calls, "watching": w.watching(),
                  "loader": type(core.__loader__).__name__,
                  "spec_loader": type(core.__spec__.loader).__name__,
                  "loader_seen_by_module": type(core.LOADER).__name__}))
""", cwd=tree)
    assert out["armed"] == {"watching": True, "wrapt": False, "calls": []}
    assert out["calls"] == [["sf_target.core", 1, True]]  # once, after VALUE existed
    assert out["watching"] is False  # handed over: the finder left sys.meta_path
    # the module keeps its real loader, also while it executes
    assert out["loader"] == out["spec_loader"] == out["loader_seen_by_module"] \
        == "SourceFileLoader"


def test_target_already_imported_is_hooked_at_once(tree):
    out = run(PRELUDE + """
import sf_target.core
w.when_imported("sf_target.core", hook)
print(json.dumps({"calls": calls, "watching": w.watching()}))
""", cwd=tree)
    assert out["calls"] == [["sf_target.core", 1, True]]
    assert out["watching"] is False


def test_hooks_recorded_after_the_hand_over_go_to_wrapt(tree):
    out = run(PRELUDE + """
w.when_imported("sf_target.core", hook)
import sf_target.core
w.when_imported("sf_plain", hook)      # not imported yet: wrapt's own finder
w.when_imported("sf_target.core", hook)  # imported: at once
import sf_plain
print(json.dumps({"calls": [c[0] for c in calls]}))
""", cwd=tree)
    assert out["calls"] == ["sf_target.core", "sf_target.core", "sf_plain"]


def test_other_imports_namespace_packages_reload_and_missing_modules_unaffected(tree):
    out = run(PRELUDE + """
import importlib
w.when_imported("sf_target.core", hook)
import sf_ns.part, sf_plain
importlib.reload(sf_plain)
try:
    import sf_does_not_exist
    missing = "imported"
except ModuleNotFoundError:
    missing = "ModuleNotFoundError"
seen = []
class Later:  # a finder behind ours is still asked
    def find_spec(self, name, path=None, target=None):
        seen.append(name)
sys.meta_path.append(Later())
try:
    import sf_also_missing
except ModuleNotFoundError:
    pass
before = {"watching": w.watching(), "wrapt": "wrapt" in sys.modules, "calls": len(calls)}
import sf_target.core
importlib.reload(sf_target.core)
print(json.dumps({"ns": sf_ns.part.X, "count": sf_plain.COUNT[0], "missing": missing,
                  "later_saw": "sf_also_missing" in seen, "before": before,
                  "calls": [c[0] for c in calls]}))
""", cwd=tree)
    assert out["ns"] == 2 and out["count"] == 1 and out["missing"] == "ModuleNotFoundError"
    assert out["later_saw"]
    assert out["before"] == {"watching": True, "wrapt": False, "calls": 0}
    assert out["calls"] == ["sf_target.core"]  # fired once; a reload does not re-fire


@pytest.mark.parametrize("first", ["namespace-package", "module-inside-it"])
def test_targets_inside_and_as_namespace_packages(tree, first):
    """A module inside a namespace package is hooked once. A namespace package itself has no
    loader to run (wrapt alone never hooks one either); it still imports normally, before and
    after the hand-over."""
    (tree / "sf_ns2").mkdir()
    (tree / "sf_ns2" / "leaf.py").write_text("VALUE = 3\n")
    imports = ["import sf_ns2.leaf", "import sf_ns.part"]
    if first == "module-inside-it":
        imports.reverse()
    out = run(PRELUDE + f"""
w.when_imported("sf_ns.part", hook)   # a module inside a namespace package
w.when_imported("sf_ns2", hook)       # a namespace package itself
{imports[0]}
{imports[1]}
print(json.dumps({{"calls": [c[0] for c in calls], "x": sf_ns.part.X,
                  "leaf": sf_ns2.leaf.VALUE}}))
""", cwd=tree)
    assert out["calls"].count("sf_ns.part") == 1
    assert out["x"] == 2 and out["leaf"] == 3


def test_import_scalefix_auto_imports_no_wrapt_and_nothing_heavy():
    out = run("""
import json, sys
before = set(sys.modules)
import scalefix.auto
from scalefix.hooks import import_watch
new = sorted(set(sys.modules) - before)
print(json.dumps({"new": new, "watching": import_watch.watching()}))
""")
    assert out["watching"] is True
    outside = [m for m in out["new"] if m.split(".")[0] != "scalefix"]
    assert not outside, outside  # no wrapt, asyncio, dataclasses, pathlib, importlib.metadata


def test_real_target_patched_at_its_import_and_wrapt_arrives_with_it():
    pytest.importorskip("mlx.core")
    out = run("""
import json, sys
import scalefix.auto, scalefix
before = "wrapt" in sys.modules
import mlx.core as mx
print(json.dumps({"before": before, "after": "wrapt" in sys.modules,
                  "patched": getattr(mx.load, "__scalefix_patch__", False),
                  "state": {s["name"]: s["state"] for s in scalefix.status()}}))
""")
    assert out == {"before": False, "after": True, "patched": True,
                   "state": {**out["state"], "mlx_load": "applied"}}
    assert out["state"]["mlx_lm_config"] == "armed"


def test_disable_installs_no_finder_and_imports_no_wrapt():
    out = run("""
import json, sys
import scalefix.auto
from scalefix.hooks import import_watch
print(json.dumps({"watching": import_watch.watching(), "wrapt": "wrapt" in sys.modules,
                  "finders": [type(f).__name__ for f in sys.meta_path]}))
""", SCALEFIX_DISABLE="1")
    assert out["watching"] is False and out["wrapt"] is False
    assert "ImportWatch" not in out["finders"]


def test_without_wrapt_the_target_still_imports_and_status_says_why(tree):
    out = run(PRELUDE + """
sys.modules["wrapt"] = None  # import wrapt now raises ImportError
w.when_imported("sf_target.core", hook)
import sf_target.core
print(json.dumps({"value": sf_target.core.VALUE, "calls": calls, "failure": w.failure}))
""", cwd=tree)
    assert out["value"] == 1 and out["calls"] == []
    assert out["failure"].startswith("cannot import wrapt (ModuleNotFoundError")


def test_without_wrapt_status_reports_the_patch_failed():
    pytest.importorskip("mlx.core")
    proc = subprocess.run([sys.executable, "-c", (
        "import sys, json; sys.modules['wrapt'] = None\n"
        "import scalefix.auto, scalefix, mlx.core as mx\n"
        "assert not hasattr(mx.load, '__scalefix_patch__')\n"
        "print(json.dumps({s['name']: [s['state'], s['reason']] for s in scalefix.status()}))")],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.splitlines()[-1])
    assert status["mlx_load"][0] == "failed"
    assert status["mlx_load"][1].startswith("cannot import wrapt")
    assert proc.stderr.count("scalefix: cannot import wrapt") == 1


def test_registry_targets_match_each_patch_module():
    from scalefix.hooks import PATCHES
    from scalefix.hooks.registry import TARGETS, patch_module
    assert set(TARGETS) == set(PATCHES)
    for name in PATCHES:
        assert TARGETS[name] == patch_module(name).TARGET, name
