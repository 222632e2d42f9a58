"""Reading tensor bytes (scalefix/formats/tensor_data.py): ``prefetch``, the hint the rewrite
gives the kernel for every side tensor before validation, asks for exactly those bytes, in
file order, up to its limit, and never fails a run itself."""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scalefix.formats import open_bundle
from scalefix.formats import tensor_data
from scalefix.formats.tensor_data import prefetch, read_raw

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise")


def _tensors(tmp_path: Path):
    save_file({"a.weight_scale": torch.ones(64, 4), "b.weight_scale": torch.ones(32, 2),
               "c.weight": torch.zeros(128, 128, dtype=torch.bfloat16)},
              str(tmp_path / "model.safetensors"))
    return open_bundle(tmp_path / "model.safetensors").tensors


def test_asks_for_exactly_the_given_tensors(tmp_path):
    t = _tensors(tmp_path)
    sides = [t["b.weight_scale"], t["a.weight_scale"]]
    assert prefetch(sides) == 64 * 4 * 4 + 32 * 2 * 4
    assert prefetch([]) == 0
    assert read_raw(t["a.weight_scale"]).nbytes == 64 * 4 * 4  # the data is as it was


def test_stops_at_the_limit_in_file_order(tmp_path, monkeypatch):
    t = _tensors(tmp_path)
    first, second = sorted((t["a.weight_scale"], t["b.weight_scale"]), key=lambda i: i.offset)
    monkeypatch.setattr(tensor_data, "PREFETCH_LIMIT", first.nbytes)
    assert prefetch([second, first]) == first.nbytes


def test_a_missing_file_is_left_to_the_read_that_needs_it(tmp_path):
    t = _tensors(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    assert prefetch([t["a.weight_scale"]]) == 0
