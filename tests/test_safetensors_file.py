"""Our safetensors reader/writer against the reference `safetensors` package and torch, both ways,
including bfloat16; damaged files give ValueError naming the problem."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load
from safetensors.torch import save_file as torch_save

from lora_np.io.safetensors_file import read_safetensors, write_safetensors


def test_round_trip_through_the_reference_reader(tmp_path, rng):
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
               "c": rng.standard_normal(2), "d": np.array([True, False])}
    write_safetensors(tmp_path / "x.safetensors", tensors, metadata={"format": "pt"})
    ref = st_load(tmp_path / "x.safetensors")
    ours, meta = read_safetensors(tmp_path / "x.safetensors")
    assert meta == {"format": "pt"}
    for k, v in tensors.items():
        np.testing.assert_array_equal(ref[k], v)
        np.testing.assert_array_equal(ours[k], v)
        assert ours[k].dtype == v.dtype


def test_reads_torch_written_float16_and_bfloat16(tmp_path):
    values = torch.tensor([[1.0, -2.5, 3.140625], [0.0, 1e-3, 65504.0]])
    torch_save({"h": values.half(), "b": values.bfloat16(), "f": values}, str(tmp_path / "t.safetensors"))
    ours, _ = read_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(ours["h"], values.half().float().numpy())
    np.testing.assert_array_equal(ours["b"], values.bfloat16().float().numpy())  # exact widening
    assert ours["b"].dtype == np.float32 and ours["h"].dtype == np.float16


def _write_raw(path, header, payload=b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + payload)
    return path


@pytest.mark.parametrize("header,payload,match", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside the 4-byte"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
    ({"a": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "dtype 'Q8'"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "exactly the fields"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
    ([1, 2], b"", "JSON object"),
])
def test_damaged_headers_are_value_errors(tmp_path, header, payload, match):
    with pytest.raises(ValueError, match=match):
        read_safetensors(_write_raw(tmp_path / "bad.safetensors", header, payload))


def test_truncated_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors(tmp_path / "empty.safetensors")
    write_safetensors(tmp_path / "ok.safetensors", {"a": np.ones(100, dtype=np.float32)})
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    with pytest.raises(ValueError, match="header length"):
        read_safetensors(tmp_path / "head.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(ValueError, match="JSON"):
        read_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="nope"):
        read_safetensors(tmp_path / "nope.safetensors")


def test_write_refuses_bad_input(tmp_path):
    with pytest.raises(TypeError, match="names"):
        write_safetensors(tmp_path / "x.safetensors", {1: np.ones(2)})
    with pytest.raises(TypeError, match="dtype"):
        write_safetensors(tmp_path / "x.safetensors", {"a": np.array(["s"])})
    assert not (tmp_path / "x.safetensors").exists()
