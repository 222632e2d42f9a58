"""Two tiers: the default ``pytest`` runs everything that needs no peer environment;
``pytest -m peers`` runs the real writers and peer versions (cached venvs, see
tests/peers/venvs.py). A test is in the peer tier when it is marked ``peers`` or uses the
``real_writer`` fixture (marked here, so none is missed); a test outside that tier that
still asks for a peer venv fails, naming itself, instead of downloading it."""

import importlib.util
import json
import os

import pytest

from scalefix.cli import main

from .peers.venvs import TIER_ENV

if importlib.util.find_spec("tests.peers.pytest_fixtures"):
    pytest_plugins = ["tests.peers.pytest_fixtures"]

PEER_FIXTURES = {"real_writer"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if PEER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    os.environ[TIER_ENV] = "peers" if item.get_closest_marker("peers") else item.nodeid


def pytest_runtest_teardown(item):
    os.environ.pop(TIER_ENV, None)


@pytest.fixture
def inspect_json(capsys):
    """Run ``scalefix inspect PATH --json`` in-process; return (exit code, report)."""
    def run(path, *extra):
        code = main(["inspect", str(path), "--json", *extra])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else None
    return run
