"""Malformed inputs, one ``case_*`` builder each: what it writes under ``tmp`` and the
fragments the one error line must name. ``CASES``: name -> builder (inspect and rewrite run
them all)."""

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file


def raw_file(path: Path, header: dict, data: bytes) -> Path:
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


def good_pair(root: Path, scale: torch.Tensor, scale_name="w.weight_scale_inv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file({"w.weight": torch.zeros(256, 256, dtype=torch.float8_e4m3fn), scale_name: scale},
              str(root / "model.safetensors"))
    return root


def index_bundle(root: Path, target: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file({"a": torch.zeros(2)}, str(root / "model-1.safetensors"))
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": target}}))
    return root


def case_truncated(tmp: Path):
    path = tmp / "t.safetensors"
    save_file({"big": torch.zeros(1000)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    return path, [str(path), "'big'", "truncated"]


def case_header_len_beyond(tmp: Path):
    path = tmp / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    return path, [str(path), "header length 10000 runs beyond"]


def case_short_file(tmp: Path):
    path = tmp / "s.safetensors"
    path.write_bytes(b"\x01\x02")
    return path, [str(path), "truncated"]


def case_invalid_json(tmp: Path):
    path = tmp / "j.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    return path, [str(path), "not valid JSON"]


def case_unknown_dtype(tmp: Path):
    path = raw_file(tmp / "d.safetensors",
                    {"x.weight": {"dtype": "F7", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0")
    return path, [str(path), "'x.weight'", "unknown dtype 'F7'"]


def case_offsets_out_of_range(tmp: Path):
    path = raw_file(tmp / "o.safetensors",
                    {"x": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}, b"\0" * 4)
    return path, [str(path), "'x'", "past the end"]


def case_offsets_wrong_size(tmp: Path):
    path = raw_file(tmp / "z.safetensors",
                    {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 16)
    return path, [str(path), "'x'", "needs 16"]


def case_overlap(tmp: Path):
    path = raw_file(tmp / "v.safetensors",
                    {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                     "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6)
    return path, [str(path), "'b'", "overlaps tensor 'a'"]


def case_index_dotdot(tmp: Path):
    root = index_bundle(tmp / "m", "../evil.safetensors")
    return root, ["model.safetensors.index.json", "'b'", "leaves the bundle directory"]


def case_index_absolute(tmp: Path):
    root = index_bundle(tmp / "m", "/etc/passwd")
    return root, ["model.safetensors.index.json", "'b'", "leaves the bundle directory"]


def case_index_dotdot_inside(tmp: Path):
    root = index_bundle(tmp / "m", "sub/../../evil.safetensors")
    return root, ["model.safetensors.index.json", "'b'", "leaves the bundle directory"]


def case_index_missing_shard(tmp: Path):
    root = index_bundle(tmp / "m", "model-2.safetensors")
    return root, ["model.safetensors.index.json", "'b'", "'model-2.safetensors'",
                  "does not exist"]


def case_index_tensor_not_in_shard(tmp: Path):
    root = index_bundle(tmp / "m", "model-1.safetensors")
    return root, ["model.safetensors.index.json", "'b'", "does not hold it"]


def case_scale_does_not_tile(tmp: Path):
    root = good_pair(tmp / "m", torch.ones(3, 5))
    return root, ["model.safetensors", "'w.weight'", "scale shape [3, 5] does not tile weight "
                  "[256, 256]"]


def case_e8m0_255(tmp: Path):
    scale = torch.tensor([[127, 255], [127, 127]], dtype=torch.uint8).view(torch.float8_e8m0fnu)
    root = good_pair(tmp / "m", scale, "w.scale")
    return root, ["model.safetensors", "'w.scale'", "255"]


def case_nonfinite_scale(tmp: Path, bad=float("nan")):
    root = good_pair(tmp / "m", torch.tensor([[1.0, bad], [1.0, 1.0]]))
    return root, ["model.safetensors", "'w.weight_scale_inv'", "NaN or infinity"]


def case_infinite_scale(tmp: Path):
    root = good_pair(tmp / "m", torch.tensor([[1.0, float("inf")], [1.0, 1.0]]))
    return root, ["model.safetensors", "'w.weight_scale_inv'", "NaN or infinity"]


NESTED = "[" * 5000 + "]" * 5000  # Python's parser recursion ends in RecursionError


def case_header_nested(tmp: Path):
    path = tmp / "n.safetensors"
    body = ('{"x": ' + NESTED + "}").encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    return path, [str(path), "header is nested deeper than 64 levels"]


def case_header_length_over_limit(tmp: Path):
    path = tmp / "l.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000_001) + b"{}")
    return path, [str(path), "exceeds the 100000000-byte limit"]


def case_index_nested(tmp: Path):
    root = index_bundle(tmp / "m", "model-1.safetensors")
    (root / "model.safetensors.index.json").write_text('{"weight_map": ' + NESTED + "}")
    return root, [str(root / "model.safetensors.index.json"), "index is nested deeper than 64"]


def case_index_oversized(tmp: Path):
    root = index_bundle(tmp / "m", "model-1.safetensors")
    with open(root / "model.safetensors.index.json", "r+b") as fh:
        fh.truncate(100_000_001)  # sparse: refused before it is parsed
    return root, [str(root / "model.safetensors.index.json"), "larger than the 100 MB limit"]


def case_config_nested(tmp: Path):
    root = good_pair(tmp / "m", torch.ones(2, 2))
    (root / "config.json").write_text('{"quantization_config": ' + NESTED + "}")
    return root, [str(root / "config.json"), "config is nested deeper than 64"]


def case_hf_quant_config_nested(tmp: Path):
    root = good_pair(tmp / "m", torch.ones(2, 2))
    (root / "hf_quant_config.json").write_text(NESTED)
    return root, [str(root / "hf_quant_config.json"), "nested deeper than 64"]


SENTINEL = "scalefix-test-unpickled"


class Boom:
    def __reduce__(self):
        return (print, (SENTINEL,))


def case_pickle_only(tmp: Path):
    root = tmp / "m"
    root.mkdir()
    torch.save({"w": Boom()}, root / "pytorch_model.bin")
    (root / "model.pt").write_bytes((root / "pytorch_model.bin").read_bytes())
    return root, [str(root), "pickle checkpoints", "refused"]


def case_pickle_file(tmp: Path):
    path = tmp / "model.pt"
    torch.save({"w": Boom()}, path)
    return path, [str(path), "pickle checkpoints"]


def _mx_bytes(tmp: Path, code_bytes: int):
    """128 values a row, one E8M0 scale per 32 (4 a row), the codes ``code_bytes`` a row."""
    path = tmp / "mx.safetensors"
    save_file({"w.weight": torch.full((8, code_bytes), 0x41, dtype=torch.uint8),
               "w.weight_scale": torch.full((8, 4), 127, dtype=torch.uint8)}, str(path))
    return path


def case_mxfp6_as_bytes(tmp: Path):
    # MXFP6: 6 bits a value, 96 bytes a row; read as FP4 that is groups of 48.
    path = _mx_bytes(tmp, 96)
    return path, [str(path), "'w.weight'", "groups of 48", "MXFP4 has 32"]


def case_mxfp8_as_bytes(tmp: Path):
    # MXFP8 codes stored as U8: 128 bytes a row; read as FP4 that is groups of 64.
    path = _mx_bytes(tmp, 128)
    return path, [str(path), "'w.weight'", "groups of 64", "MXFP4 has 32"]


def case_not_there(tmp: Path):
    return tmp / "nope", [str(tmp / "nope"), "no such file"]


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}
