"""Our safetensors reader/writer against the reference `safetensors` package and torch, both ways,
including bfloat16; damaged files give ValueError naming the file and the problem (the package's
own check); reads leave no file pages resident."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as st_load
from safetensors.torch import save_file as torch_save

from lora_np.io.safetensors_file import open_safetensors, read_safetensors, write_safetensors


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
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "not fully covered"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid shape, data type, or offset"),
    ({"a": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unknown variant `Q8`"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "integer `-1`"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "missing field `data_offsets`"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "invalid offset for tensor `b`"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "invalid offset for tensor `a`"),
    ({"__metadata__": {"k": 1}}, b"", "expected a string"),
    ([1, 2], b"", "invalid type: sequence"),
    ({"a": {"dtype": "U16", "shape": [1], "data_offsets": [0, 2]}}, b"\0\0", "dtype 'U16'; readable dtypes: F64"),
])
def test_damaged_headers_are_value_errors_naming_the_file(tmp_path, header, payload, match):
    with pytest.raises(ValueError, match="bad.safetensors: .*" + match):
        read_safetensors(_write_raw(tmp_path / "bad.safetensors", header, payload))


def test_offsets_in_any_order_and_empty_tensors(tmp_path):
    header = {"z": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
              "e": {"dtype": "F64", "shape": [0, 3], "data_offsets": [16, 16]},
              "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
              "p": {"dtype": "I16", "shape": [2], "data_offsets": [4, 8]}}
    payload = (np.array([0x3F80, 0xC020], "<u2").tobytes() + np.array([-3, 7], "<i2").tobytes()
               + np.array([1.5, -2.0], "<f4").tobytes())
    ours, _ = read_safetensors(_write_raw(tmp_path / "o.safetensors", header, payload))
    np.testing.assert_array_equal(ours["a"], [1.0, -2.5])  # bf16 0x3F80 = 1.0, 0xC020 = -2.5
    np.testing.assert_array_equal(ours["p"], [-3, 7])
    np.testing.assert_array_equal(ours["z"], [1.5, -2.0])
    assert ours["e"].shape == (0, 3) and ours["e"].dtype == np.float64


def test_open_lists_without_reading_and_reads_one_tensor_cast(tmp_path):
    values = torch.tensor([[1.0, -2.5, 3.140625], [0.0, 1e-3, 65504.0]])
    torch_save({"b": values.bfloat16(), "h": values.half()}, str(tmp_path / "t.safetensors"))
    tensors, meta = open_safetensors(tmp_path / "t.safetensors")
    assert {n: (t.shape, t.stored, t.dtype) for n, t in tensors.items()} == {
        "b": ((2, 3), "BF16", np.dtype(np.float32)), "h": ((2, 3), "F16", np.dtype(np.float16))}
    as_64 = tensors["h"].read(np.float64)
    assert as_64.dtype == np.float64
    np.testing.assert_array_equal(as_64, values.half().double().numpy())
    np.testing.assert_array_equal(tensors["b"].read(np.float32), values.bfloat16().float().numpy())


def test_a_file_cut_after_it_was_opened(tmp_path):
    write_safetensors(tmp_path / "t.safetensors", {"a": np.ones(100, dtype=np.float32)})
    tensors, _ = open_safetensors(tmp_path / "t.safetensors")
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="cut short"):
        tensors["a"].read()


def test_reading_keeps_no_file_pages_mapped(tmp_path):
    """Closed form: reading every tensor of a 64 MB file one by one (dropping each) raises the resident
    set by far less than the file; a memory-mapped reader keeps the file's pages (+64 MB)."""
    write_safetensors(tmp_path / "big.safetensors", {f"t{i}": np.full((1024, 1024), i, np.float32)
                                                      for i in range(16)})

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    tensors, _ = open_safetensors(tmp_path / "big.safetensors")
    before, peak = rss_mb(), 0.0
    for name, t in tensors.items():
        assert t.read()[0, 0] == int(name[1:])
        peak = max(peak, rss_mb() - before)
    assert peak < 24, f"resident set grew by {peak:.0f} MB reading a 64 MB file tensor by tensor"


def test_truncated_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors(tmp_path / "empty.safetensors")
    write_safetensors(tmp_path / "ok.safetensors", {"a": np.ones(100, dtype=np.float32)})
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated.*not fully covered"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    with pytest.raises(ValueError, match="header length"):
        read_safetensors(tmp_path / "head.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(ValueError, match="UTF-8"):
        read_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="nope"):
        read_safetensors(tmp_path / "nope.safetensors")


def test_write_refuses_bad_input(tmp_path):
    with pytest.raises(TypeError, match="names"):
        write_safetensors(tmp_path / "x.safetensors", {1: np.ones(2)})
    with pytest.raises(TypeError, match="dtype"):
        write_safetensors(tmp_path / "x.safetensors", {"a": np.array(["s"])})
    assert not (tmp_path / "x.safetensors").exists()
