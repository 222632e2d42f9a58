"""Where things are, for tests at any depth under tests/."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
PEER_SCRIPTS = TESTS / "peers" / "scripts"      # run by the peer venvs' Pythons
OLD_JANG = TESTS / "old_jang"                   # the old upstream jang_tools, reproduced
