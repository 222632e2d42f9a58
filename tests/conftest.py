import json

import pytest

from scalefix.cli import main

import importlib.util
if importlib.util.find_spec("tests.peers.pytest_fixtures"):
    pytest_plugins = ["tests.peers.pytest_fixtures"]


@pytest.fixture
def inspect_json(capsys):
    """Run ``scalefix inspect PATH --json`` in-process; return (exit code, report)."""
    def run(path, *extra):
        code = main(["inspect", str(path), "--json", *extra])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else None
    return run
