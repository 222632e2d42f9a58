"""``scalefix run -- COMMAND``: the command's exit status (0, 1, 3, death by SIGTERM), stdin /
stdout and signals are its own; every Python it starts, however deep, has the fixes armed;
the environment's own sitecustomize still runs; a Python that lacks scalefix gets it from the
launcher or says it has none; and ``mlx_lm.convert`` under it writes the same bits as under
``import scalefix.auto``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support.jang_fp8_fixtures import differences, tensor_bytes
from tests.support.paths import REPO

RUN = (sys.executable, "-m", "scalefix", "run")
ARMED = "import sys; print('scalefix.auto' in sys.modules)"


def scalefix_run(*command, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run([*RUN, "--", *command], capture_output=True, text=True, env=env, **kw)


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_status_is_the_commands(code):
    proc = scalefix_run(sys.executable, "-c", f"import sys; sys.exit({code})")
    assert proc.returncode == code, proc.stderr


def test_death_by_sigterm_is_the_commands():
    proc = scalefix_run(sys.executable, "-c",
                        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == -signal.SIGTERM


def test_a_signal_to_scalefix_run_reaches_the_command_and_stdin_passes_through():
    proc = subprocess.Popen([*RUN, "--", sys.executable, "-c",
                             "import sys; print(sys.stdin.readline().upper(), flush=True); "
                             "sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.stdin.write("hello\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "HELLO\n"   # the command is reading: now signal it
    proc.send_signal(signal.SIGTERM)             # the pid scalefix run was started as
    assert proc.wait() == -signal.SIGTERM
    proc.stdin.close()
    proc.stdout.close()


def test_no_command_is_a_usage_line_and_exit_2():
    for args in ((), ("--",)):
        proc = subprocess.run([*RUN, *args], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip() == "usage: scalefix run -- COMMAND [ARGS...]"


def test_a_missing_command_is_127_as_in_a_shell():
    proc = scalefix_run("no-such-command-scalefix")
    assert proc.returncode == 127
    assert "no-such-command-scalefix: command not found" in proc.stderr


def test_armed_in_the_command_and_in_python_children_of_any_depth(tmp_path):
    script = tmp_path / "armed.py"
    script.write_text(ARMED + "\n")
    python = f"{sys.executable} {script}"
    grandchild = f"{sys.executable} -c 'import subprocess, sys; subprocess.run(sys.argv[1:])' "
    proc = scalefix_run("sh", "-c", f"{python}; sh -c '{python}'; {grandchild}{python}")
    assert proc.stdout.split() == ["True", "True", "True"], proc.stderr
    plain = subprocess.run([sys.executable, "-c", ARMED], capture_output=True, text=True)
    assert plain.stdout.strip() == "False"  # the test would see a shim already in place


def _other_sitecustomize(folder: Path) -> str:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(  # counted per process
        "import builtins\nbuiltins.CHAINED = getattr(builtins, 'CHAINED', '') + 'x'\n")
    return str(folder)


def test_keeps_the_environments_own_sitecustomize(tmp_path):
    other = _other_sitecustomize(tmp_path / "other")
    code = "import builtins, sys; print(builtins.CHAINED, 'scalefix.auto' in sys.modules)"
    proc = scalefix_run(sys.executable, "-c", code, env={"PYTHONPATH": other})
    assert proc.stdout.split() == ["x", "True"], proc.stderr


def test_stacked_with_the_drop_in_each_runs_once(tmp_path):
    """scalefix run over PYTHONPATH=sitecustomize_example:other: the bundled file, the example
    (the same file) and the environment's own one, each once, no loop."""
    other = _other_sitecustomize(tmp_path / "other")
    path = os.pathsep.join([str(REPO / "sitecustomize_example"), other])
    code = "import builtins; print(builtins.CHAINED)"
    proc = scalefix_run(sys.executable, "-c", code, env={"PYTHONPATH": path})
    assert proc.returncode == 0 and proc.stdout.strip() == "x", proc.stderr
    twice = scalefix_run(*RUN, "--", sys.executable, "-c", code, env={"PYTHONPATH": path})
    assert twice.returncode == 0 and twice.stdout.strip() == "x", twice.stderr


def test_a_python_without_scalefix(tmp_path):
    """It gets scalefix from where the launcher found it (same Python version); with another
    version it starts all the same and says on stderr that nothing is armed there."""
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    python = str(bare / "bin" / "python")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    alone = subprocess.run([python, "-c", "import scalefix"], capture_output=True, env=env,
                           cwd=tmp_path)
    assert alone.returncode != 0  # the bare venv really lacks it
    proc = subprocess.run([*RUN, "--", python, "-c", ARMED], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    other = subprocess.run([python, "-c", ARMED], capture_output=True, text=True, cwd=tmp_path,
                           env={**env, "PYTHONPATH": str(REPO / "scalefix" / "run_boot"),
                                "SCALEFIX_RUN": "1", "SCALEFIX_RUN_PYTHON": "2.7",
                                "SCALEFIX_RUN_PATH": ""})
    assert other.returncode == 0 and other.stdout.strip() == "False"
    assert "cannot import scalefix" in other.stderr and "no runtime fixes" in other.stderr


@pytest.mark.slow
def test_mlx_lm_convert_under_scalefix_run_is_the_same_bits_as_under_scalefix_auto(tmp_path):
    pytest.importorskip("mlx_lm")
    from tests.support.tiny_llama import llama_tiny_fp8
    src = tmp_path / "llama-fp8"
    llama_tiny_fp8(src)
    convert = str(Path(sys.executable).parent / "mlx_lm.convert")
    run = scalefix_run(convert, "--hf-path", str(src), "--mlx-path", str(tmp_path / "run"),
                       cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    auto = subprocess.run([sys.executable, "-c",
                           "import sys, scalefix.auto\nfrom mlx_lm.convert import main\n"
                           f"sys.argv = ['mlx_lm.convert', '--hf-path', {str(src)!r}, "
                           f"'--mlx-path', {str(tmp_path / 'auto')!r}]\nmain()"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert auto.returncode == 0, auto.stderr[-3000:]
    got, want = tensor_bytes(tmp_path / "run"), tensor_bytes(tmp_path / "auto")
    assert len(want) > 10 and differences(got, want) == []
    assert not any("scale" in name for name in got)
    plain = subprocess.run([convert, "--hf-path", str(src), "--mlx-path", str(tmp_path / "p")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode != 0  # plain mlx-lm has no FP8 path for llama: a real trap
