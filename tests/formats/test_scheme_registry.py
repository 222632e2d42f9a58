"""The scheme contract (scalefix/formats/schemes/__init__.py), checked on every registered
family, so a new module that forgets part of it fails here with its name."""

import subprocess
import sys
from collections import Counter

import pytest

from scalefix.formats.schemes import SCHEMES, Declaration, claimant, schemes

SOURCES = {"comfy", "quant_method", "ct_format", "quant_algo", "quark"}


@pytest.mark.parametrize("name", SCHEMES)
def test_each_scheme_fulfils_the_contract(name):
    module = dict(zip(SCHEMES, schemes()))[name]
    assert module.__doc__ and len(module.__doc__) > 80, f"{name}: say why, in the docstring"
    assert isinstance(module.NAME, str) and module.NAME
    assert module.DECLARATIONS, f"{name}: declares nothing"
    for source, value in module.DECLARATIONS:
        assert source in SOURCES and isinstance(value, str) and value, (name, source, value)
    assert callable(module.display)
    per_layer = {s for s, _ in module.DECLARATIONS} == {"comfy"}
    if per_layer:  # declared in the files: found there, claimed layer by layer, decoded here
        for part in ("find_declarations", "claim", "decode"):
            assert callable(getattr(module, part, None)), f"{name}: no {part}"
    else:
        assert callable(getattr(module, "claim_bundle", None)), f"{name}: no claim_bundle"


def test_every_declaration_has_exactly_one_claimant():
    owners = Counter(pair for module in schemes() for pair in module.DECLARATIONS)
    assert [pair for pair, n in owners.items() if n > 1] == []
    for module in schemes():
        for source, value in module.DECLARATIONS:
            assert claimant(Declaration(source, value, "test")) is module


def test_an_unknown_declaration_has_no_claimant():
    assert claimant(Declaration("quant_method", "no-such-method", "test")) is None


def test_importing_the_formats_package_loads_no_scheme_and_no_numpy():
    """Schemes are imported on first classification: ``import scalefix.formats`` (the CLI's
    first step) stays light."""
    code = ("import sys, scalefix.formats; "
            "print(sorted(m for m in sys.modules if m.startswith('scalefix.formats.schemes.')"
            " or m == 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
