"""The docs hold: every repo path the code and the docs cite exists, and the README's commands
run as shown.

(a) Citations. Docstrings and comments under scalefix/, benchmarks/ and tests/, and every
    Markdown file of the repository, are searched for file paths. A path is checked when it
    names something of this repository (its first part is a top-level entry such as
    ``scalefix/`` or ``docs/``, or a folder beside the citing file), when it names a Markdown
    file, or when it points into the project's notes outside the repository (``OUTSIDE``).
    It must exist relative to the repository root, the citing file's folder or its top-level
    folder (a glob such as ``patches/*.diff`` must match; a module path may omit ``.py``).
    A section citation (a Markdown path, then ``§N``, ``section N`` or ``s. N``) must name
    a numbered heading of that file.
(b) README. Its fenced ``sh`` / ``console`` / ``python`` blocks run in order, in one work
    folder holding the placeholder checkpoints below under their own names, so each command
    runs exactly as printed. Every command must exit 0, and every output line a ``console``
    block shows (except ``...``) must appear, in order, in what the command printed.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# ---------------------------------------------------------------------------------------------
# (a) cited paths

CODE_DIRS = ("scalefix", "benchmarks", "tests")
SKIP_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", "scalefix.egg-info", "build",
             "dist", "node_modules"}
OUTSIDE = {"shared"}   # the project's notes outside the repository: never citable
LOCAL = {".venv", ".git", ".pytest_cache", "build", "dist"}   # this checkout's, not the repo's
# Paths that are cited on purpose although the checkout has no such file.
NOT_IN_REPO = {
    "scalefix/patches": "the wheel's name for the top-level patches/ (pyproject package-dir)",
    "scalefix/formats/schemes/foo.py": "docs/architecture.md's walk-through family",
    "tests/families/foo/test_foo.py": "docs/architecture.md's walk-through family",
    "results-latest.md": "written by benchmarks/run.py into its work folder",
    "runtime-latest.md": "written by benchmarks/runtime_memory.py into its work folder",
    "QUANTIZATION.md": "ComfyUI's own file, cited by scalefix/formats/schemes/comfy.py",
}
EXTENSIONS = "py|md|diff|toml|json|txt|sh|cfg|ini|yaml|yml"
PATH_RE = re.compile(
    r"(?<![\w./$~-])"                                   # not inside a longer or absolute path
    r"((?:\.\./)*(?:\.?[\w*-][\w.*-]*/)+(?:[\w*-][\w.*-]*)?"   # [../]dir/ ... [name]
    r"|[\w*-][\w.*-]*\.(?:" + EXTENSIONS + r"))"         # or a bare file name with an extension
    r"(?![\w<{(:/])")
SECTION_RE = re.compile(r"([\w./-]+\.md)`?'?\s*(?:§\s*|sections?\s+|s\.\s*)(\d+)")
URL_RE = re.compile(r"\w+://\S+")


def paths_in(text: str) -> list[str]:
    """Path-like words of ``text`` (a sentence's full stop is not part of the path)."""
    return [m.group(1).rstrip(".") for m in PATH_RE.finditer(URL_RE.sub(" ", text))]


def repo_files(pattern: str):
    for path in sorted(ROOT.rglob(pattern)):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def code_texts(path: Path):
    """(line, text) of every docstring and comment of a Python file."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                for offset, line in enumerate(body[0].value.value.splitlines()):
                    yield body[0].lineno + offset, line
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def markdown_texts(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield number, line


def cited_texts():
    """(file, line, text) of every place that may cite a path."""
    for top in CODE_DIRS:
        for path in repo_files(f"{top}/**/*.py"):
            for number, text in code_texts(path):
                yield path, number, text
    for path in repo_files("*.md"):
        for number, text in markdown_texts(path):
            yield path, number, text


def bases(citing: Path) -> list[Path]:
    top = ROOT / citing.relative_to(ROOT).parts[0]
    return [ROOT, citing.parent, top if top.is_dir() else ROOT]


def resolves(cited: str, citing: Path) -> bool:
    cited = cited.rstrip("/")
    for base in bases(citing):
        if any(ch in cited for ch in "*?["):
            if list(base.glob(cited)):
                return True
        elif (base / cited).exists() or (base / f"{cited}.py").is_file():
            return True
    return False


def checked(cited: str, citing: Path) -> bool:
    """Whether ``cited`` claims to be a path of this repository."""
    first = cited.split("/")[0]
    if first in LOCAL:
        return False
    if first in OUTSIDE or first == ".." or cited.endswith(".md"):
        return True
    if "/" not in cited.rstrip("/"):
        return False          # a bare file name: only Markdown names are checked
    name = cited.rstrip("/").rsplit("/", 1)[-1]
    if "." in name.lstrip(".") and not re.fullmatch(rf"[^.]+\.(?:{EXTENSIONS})", name):
        return False          # another project's file type (mlx/ops.cpp): not ours
    return any((base / first).exists() for base in bases(citing))


def headings(md: Path) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#+\s+(\d+)\.", md.read_text(encoding="utf-8"),
                                            re.M)}


def find_md(cited: str, citing: Path) -> Path | None:
    for base in bases(citing):
        if (base / cited).is_file():
            return base / cited
    return None


def missing_citations() -> list[str]:
    problems = []
    for path, number, text in cited_texts():
        where = f"{path.relative_to(ROOT)}:{number}"
        for cited in paths_in(text):
            if cited.rstrip("/") in NOT_IN_REPO or not checked(cited, path):
                continue
            if not resolves(cited, path):
                problems.append(f"{where}: cites {cited!r}, which is not in the repository")
        for match in SECTION_RE.finditer(text):
            md = find_md(match.group(1), path)
            if md is not None and match.group(2) not in headings(md):
                problems.append(f"{where}: cites {match.group(1)} section {match.group(2)}, "
                                f"which has no heading '{match.group(2)}.'")
    return problems


def test_every_cited_path_is_in_the_repository():
    problems = missing_citations()
    assert not problems, "\n".join(problems)


def test_the_citation_finder_sees_what_it_must(tmp_path):
    """The regex and the rules, on the spellings the code and the docs use."""
    citing = ROOT / "scalefix" / "formats" / "x.py"
    found = lambda text: [p for p in paths_in(text) if checked(p, citing)]
    assert found("see ``docs/formats.md`` §3 and scalefix/formats/dequant.py.") == [
        "docs/formats.md", "scalefix/formats/dequant.py"]
    assert found("(formats.md section 9), formats-next.md s.2, shared/design.md") == [
        "formats.md", "formats-next.md", "shared/design.md"]
    assert found("`patches/*.diff`, tests/peers/venvs.py, codecs.py") == [
        "patches/*.diff", "tests/peers/venvs.py"]
    assert found("~/.cache/scalefix/peers /work/main/.venv/bin/python mlx_lm/utils.py") == []
    assert found("mlx/ops.cpp; hooks/load_policy") == ["hooks/load_policy"]
    assert resolves("hooks/load_policy", ROOT / "scalefix" / "mlx" / "x.py")
    assert found("tests/families/<family>/ and {python}/scalefix") == []
    assert [m.groups() for m in SECTION_RE.finditer("formats.md s. 9; `docs/mlx.md` §4")] == [
        ("formats.md", "9"), ("docs/mlx.md", "4")]
    assert resolves("patches/*.diff", citing) and not resolves("formats.md", citing)
    assert found("[the drop-in](../sitecustomize_example/README.md), .venv/bin/pip") == [
        "../sitecustomize_example/README.md"]
    assert "3" in headings(ROOT / "docs" / "formats.md")


# ---------------------------------------------------------------------------------------------
# (b) the README's commands, run as shown


def build_model(work: Path) -> None:
    from tests.support.tiny_llama import llama_tiny_fp8
    llama_tiny_fp8(work / "MODEL")


def build_converted(work: Path) -> None:
    from scalefix.demo import convert_without_scales
    if not (work / "MODEL").exists():
        build_model(work)
    convert_without_scales(work / "MODEL", work / "CONVERTED")


def build_app(work: Path) -> None:
    site = work / "APP" / "Contents/Resources/python/lib/python3.11/site-packages"
    shutil.copytree(Path(__file__).parent / "old_jang" / "jang_tools", site / "jang_tools")


def build_comfy(work: Path) -> None:
    """A ComfyUI-native file: an FP8 layer declared by its ``comfy_quant`` tensor, a plain
    BF16 layer beside it."""
    import json as _json

    import torch
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    layer = "model.diffusion_model.double_blocks.0.img_attn.qkv"
    marker = torch.tensor(list(_json.dumps({"format": "float8_e4m3fn"}).encode()),
                          dtype=torch.uint8)
    save_file({layer + ".weight": (torch.randn(64, 32, generator=gen) * 20).to(
                   torch.float8_e4m3fn),
               layer + ".weight_scale": torch.tensor(0.01),
               layer + ".comfy_quant": marker,
               "model.diffusion_model.final_layer.weight": torch.randn(8, 32).to(torch.bfloat16)},
              str(work / "COMFY.safetensors"))


# The placeholders the README uses, each built in the work folder under its own name.
PLACEHOLDERS = {
    "MODEL": (build_model, "a whole tiny Llama in block FP8, scale in another shard, with a "
                           "tokenizer (tests/support/tiny_llama.py)"),
    "CONVERTED": (build_converted, "MODEL converted to BF16 without its scales, as a "
                                   "scale-unaware converter does (scalefix.demo)"),
    "APP": (build_app, "an app tree bundling the old jang_tools (tests/old_jang)"),
    "COMFY": (build_comfy, "a ComfyUI-native FP8 file declared by comfy_quant"),
}


# Commands not run, and why. Keep this list short.
SKIPPED = (
    (re.compile(r"\bpip install\b"), "installs from the package index: needs a network"),
    (re.compile(r"\bpytest\b"), "runs the test suite itself"),
)


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPPED:
        if pattern.search(command):
            return reason
    return None


def readme_steps(text: str):
    """(kind, code, expected output lines) for every runnable fenced block, in order."""
    for match in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```", text, re.M | re.S):
        kind, body = match.group(1), match.group(2)
        if kind in ("sh", "bash", "shell"):
            for line in body.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    yield "sh", line.strip(), []
        elif kind == "console":
            command, shown = None, []
            for line in body.splitlines():
                if line.startswith("$ "):
                    if command is not None:
                        yield "sh", command, shown
                    command, shown = line[2:].strip(), []
                elif command is not None:
                    shown.append(line)
            if command is not None:
                yield "sh", command, shown
        elif kind == "python":
            yield "python", body, []


def run_readme(readme: Path, work: Path) -> tuple[list[str], list[str]]:
    """Run ``readme``'s blocks in ``work``; return (problems, commands skipped and why)."""
    text = readme.read_text(encoding="utf-8")
    for name, (build, _) in PLACEHOLDERS.items():
        if re.search(rf"\b{name}\b", text) and not any(work.glob(name + "*")):
            build(work)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / ".hub"))
    for key in [k for k in env if k.startswith("SCALEFIX_")]:
        del env[key]
    problems, notes = [], []
    for kind, code, shown in readme_steps(text):
        reason = skip_reason(code) if kind == "sh" else None
        if reason:
            notes.append(f"skipped {code!r}: {reason}")
            continue
        argv = ["bash", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            problems.append(f"{code!r} exited {proc.returncode}:\n{proc.stdout[-2000:]}"
                            f"{proc.stderr[-2000:]}")
            continue
        printed = iter(proc.stdout.splitlines())
        for line in shown:
            if line.strip() != "..." and not any(out == line for out in printed):
                problems.append(f"{code!r} did not print, in this order:\n  {line}\n"
                                f"it printed:\n{proc.stdout[-3000:]}")
                break
    return problems, notes


def test_the_readme_commands_run_as_shown(tmp_path):
    pytest.importorskip("mlx_lm")
    problems, skipped = run_readme(README, tmp_path)
    print("\n".join(skipped))
    assert not problems, "\n\n".join(problems)
