"""The streaming safetensors writer against the reference package: the same bytes as
``safetensors.numpy.save_file`` for every dtype it writes (bfloat16 read from a torch file and
written back, empty tensors, metadata, non-contiguous and big-endian arrays); a memory peak of about
one tensor, not the file twice; a failure mid-write leaves neither a file nor a temporary one."""

import json
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as torch_load
from safetensors.torch import save_file as torch_save

from lora_np import GPT, GPTConfig, backend, load_gpt2, save_gpt2
from lora_np.io import atomic
from lora_np.io.safetensors_file import read_safetensors, write_safetensors


def _all_dtypes(rng):
    floats = rng.standard_normal((3, 5))
    return {"f32": floats.astype(np.float32), "f16": floats.astype(np.float16), "f64": floats,
            "i8": rng.integers(-128, 127, (4, 2), dtype=np.int8), "u8": rng.integers(0, 255, 7, dtype=np.uint8),
            "i16": np.arange(-3, 3, dtype=np.int16), "u16": np.arange(6, dtype=np.uint16),
            "i32": np.arange(5, dtype=np.int32), "u32": np.arange(5, dtype=np.uint32),
            "i64": np.arange(-2, 2, dtype=np.int64), "u64": np.arange(3, dtype=np.uint64),
            "bool": np.array([[True, False], [False, True]]), "scalar": np.array(2.5, dtype=np.float32),
            "empty": np.zeros((0, 4), np.float32), "empty_i8": np.zeros(0, np.int8),
            # names that sort differently by byte and by case, and one outside ASCII
            "B.weight": floats[0].astype(np.float32), "a.weight": floats[1].astype(np.float32),
            "é": np.ones(2, np.float16)}


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_bytes_equal_the_packages(tmp_path, rng, metadata):
    tensors = _all_dtypes(rng)
    write_safetensors(tmp_path / "ours.safetensors", tensors, metadata=metadata)
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata=metadata)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_bfloat16_as_stored_is_written_as_the_package_writes_it(tmp_path):
    """A torch bf16 file read here holds float32 (exactly widened); writing it back gives the
    package's file of those float32 values, and the raw bf16 bit patterns (uint16) write as U16."""
    values = torch.tensor([[1.0, -2.5, 3.140625], [0.0, 1e-3, 65504.0]]).bfloat16()
    torch_save({"w": values}, str(tmp_path / "bf16.safetensors"))
    widened, _ = read_safetensors(tmp_path / "bf16.safetensors")
    bits = {"w_bits": values.view(torch.int16).numpy().view(np.uint16)}
    for name, tensors in (("widened", widened), ("bits", bits)):
        write_safetensors(tmp_path / f"{name}.safetensors", tensors)
        save_file(tensors, str(tmp_path / f"{name}_ref.safetensors"))
        assert (tmp_path / f"{name}.safetensors").read_bytes() == (tmp_path / f"{name}_ref.safetensors").read_bytes()
    np.testing.assert_array_equal(load_file(tmp_path / "widened.safetensors")["w"], values.float().numpy())


def test_many_metadata_keys_and_odd_arrays_load_equal(tmp_path, rng):
    """The package writes metadata in hash order, so with several keys compare what is read back;
    a transposed (non-contiguous) and a big-endian array are written as their values, little-endian."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    tensors = {"t": x.T, "big": x.astype(">f4"), "step": x[:, ::2], "dev": backend.xp.asarray(x)}
    metadata = {"format": "pt", "note": 'quotes " and \\ and \n and ü', "n": 3}
    write_safetensors(tmp_path / "x.safetensors", tensors, metadata=metadata)
    loaded = load_file(tmp_path / "x.safetensors")
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], backend.to_numpy(value))
    with safe_open(tmp_path / "x.safetensors", framework="numpy") as f:
        assert f.metadata() == {k: str(v) for k, v in metadata.items()}


def test_writing_holds_about_one_tensor_not_the_file(tmp_path, backend_name):
    if backend_name != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    tensors = {f"layer{i}.weight": np.full((1024, 1024), i, np.float32) for i in range(16)}  # 64 MiB
    tracemalloc.start()
    try:
        write_safetensors(tmp_path / "big.safetensors", tensors, metadata={"format": "pt"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"writing 64 MiB allocated {peak / 2**20:.1f} MiB"  # save() would take ~128 MiB
    loaded = load_file(tmp_path / "big.safetensors")
    assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())


@pytest.mark.parametrize("fail_on_part", [0, 1, 3])
def test_a_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, fail_on_part):
    """A disk that fills after some parts (header, tensors): no file, no temp file; an older file
    at the path is kept as it was."""
    calls = []

    def write_then_fail(f, data):
        calls.append(len(data))
        if len(calls) > fail_on_part:
            f.write(memoryview(data)[:3])
            raise OSError(28, "No space left on device (simulated)")
        f.write(data)

    tensors = {f"w{i}": np.full(100, i, np.float32) for i in range(4)}
    monkeypatch.setattr(atomic, "_write_chunks", write_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_safetensors(tmp_path / "new.safetensors", tensors)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    (tmp_path / "old.safetensors").write_bytes(b"old")
    monkeypatch.setattr(atomic, "_write_chunks", write_then_fail)
    calls.clear()
    with pytest.raises(OSError, match="simulated"):
        write_safetensors(tmp_path / "old.safetensors", tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["old.safetensors"]
    assert (tmp_path / "old.safetensors").read_bytes() == b"old"


@pytest.mark.parametrize("tensors,error,match", [
    ({"a": np.zeros(2, np.complex64)}, TypeError, "tensor 'a' has unsupported dtype complex64"),
    ({"a": np.array(["x"])}, TypeError, "unsupported dtype"),
    ({"__metadata__": np.zeros(1)}, ValueError, "'__metadata__' is the header's metadata key"),
    ({1: np.zeros(1)}, TypeError, "dict from names"),
])
def test_bad_input_is_refused_before_any_file_is_made(tmp_path, tensors, error, match):
    with pytest.raises(error, match=match):
        write_safetensors(tmp_path / "x.safetensors", {"ok": np.zeros(3), **tensors})
    assert list(tmp_path.iterdir()) == []


def test_header_is_padded_to_eight_bytes_with_spaces(tmp_path):
    for n in range(1, 10):  # names of every length modulo 8
        write_safetensors(tmp_path / "x.safetensors", {"a" * n: np.zeros(1, np.float32)})
        raw = (tmp_path / "x.safetensors").read_bytes()
        size = int.from_bytes(raw[:8], "little")
        assert size % 8 == 0 and json.loads(raw[8:8 + size])["a" * n]["data_offsets"] == [0, 4]
        assert raw[8:8 + size].decode().endswith("}" + " " * (raw[8:8 + size].decode().count(" ")))


def test_saving_a_model_copies_no_weight(tmp_path, backend_name):
    """save_gpt2 hands the parameters' own arrays to the writer (state_dict() would copy them all)."""
    if backend_name != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    model = GPT(GPTConfig(vocab_size=2048, block_size=64, n_layer=2, n_head=4, n_embd=256))  # ~8 MiB
    tracemalloc.start()
    try:
        save_gpt2(model, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"saving an 8 MiB model allocated {peak / 2**20:.1f} MiB"
    for (_, a), (_, b) in zip(load_gpt2(tmp_path).named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_float_dtype_writes_bfloat16_as_torch_rounds_it(tmp_path):
    """write_safetensors(float_dtype="bfloat16"): round to nearest even, as torch's .to(torch.bfloat16),
    ties, subnormals, infinities and NaN included; the safetensors package reads what was written."""
    rng = np.random.default_rng(0)
    ties = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 1e-40, -1e-41, np.inf, -np.inf, np.nan, 0.0, -0.0,
                     3.0e38, 65504.0], dtype=np.float32)
    x = np.concatenate([ties, rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 1000)])
    write_safetensors(tmp_path / "w.safetensors", {"w": x, "i": np.arange(3)}, float_dtype="bfloat16")
    got = torch_load(tmp_path / "w.safetensors")
    expected = torch.from_numpy(x).to(torch.bfloat16)
    assert got["w"].dtype == torch.bfloat16 and got["i"].dtype == torch.int64
    assert torch.equal(got["w"].view(torch.int16)[~expected.isnan()], expected.view(torch.int16)[~expected.isnan()])
    assert got["w"].isnan().tolist() == expected.isnan().tolist()
    write_safetensors(tmp_path / "h.safetensors", {"w": x}, float_dtype="float16")
    assert torch_load(tmp_path / "h.safetensors")["w"].dtype == torch.float16
    with pytest.raises(ValueError, match="float_dtype must be one of"):
        write_safetensors(tmp_path / "x.safetensors", {"w": x}, float_dtype="int8")
