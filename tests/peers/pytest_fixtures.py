"""pytest access to real-writer artifacts. On CI a peer that cannot be built fails the test;
elsewhere it is skipped with the reason (and a skip is never a pass)."""

import os

import pytest

from .artifacts import real_writer_artifact


@pytest.fixture(scope="session")
def real_writer():
    def get(kind: str):
        try:
            return real_writer_artifact(kind)
        except Exception as exc:  # pip or the peer tool failed
            if os.environ.get("CI"):
                pytest.fail(f"real writer {kind} unavailable: {exc}")
            pytest.skip(f"real writer {kind} unavailable: {str(exc).splitlines()[0]}")
    return get
