"""Shared by the integer families' folders: the formula-built fixtures decoded by the
writers' side, once per session (tests/support/int_checks.py)."""

import pytest

from tests.support.int_checks import decode_cross


@pytest.fixture(scope="session")
def cross_decoded(tmp_path_factory):
    return decode_cross(tmp_path_factory.mktemp("cross"))
