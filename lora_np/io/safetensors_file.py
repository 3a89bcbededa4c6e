"""The .safetensors format, read and written without torch.

    [8 bytes: little-endian u64 N][N bytes: JSON header][raw little-endian tensor bytes]
    header = {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
              "__metadata__": {"key": "value"}}            (offsets relative to the byte buffer)

Writing uses the ``safetensors`` package's own serializer (then an atomic rename). Reading is
done here, because every field must be checked before it is trusted (a damaged file must give a
ValueError naming what is wrong, never a crash or a half-built model) and because NumPy has no
bfloat16: BF16 tensors are widened to float32 exactly (a bf16 is the top half of a float32).
No pickle is involved anywhere.
"""

import json
import math
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 * 1024 * 1024


def _fail(path, message):
    raise ValueError(f"{path}: {message}")


def tensor_entry(path, name, info, buffer_len):
    """One header entry checked against the data buffer: (dtype, shape, data_offsets), or ValueError."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        _fail(path, f"tensor {name!r} needs exactly the fields dtype, shape, data_offsets; got {info!r:.200}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        _fail(path, f"tensor {name!r} has dtype {dtype!r}; readable dtypes: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        _fail(path, f"tensor {name!r} has shape {shape!r}; a shape is a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= buffer_len):
        _fail(path, f"tensor {name!r} has data_offsets {offsets!r}, outside the {buffer_len}-byte data buffer "
                    f"(the file may be truncated)")
    expected = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != expected:
        _fail(path, f"tensor {name!r} of dtype {dtype} and shape {shape} needs {expected} bytes; "
                    f"its data_offsets span {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), offsets


def decode_tensor(raw, dtype, shape):
    """A tensor's raw little-endian bytes as a native-order NumPy array (bfloat16 widened to float32)."""
    arr = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="))  # a native-order, writable copy


class StoredTensor:
    """One tensor of a file, known by its checked header entry; ``read()`` loads just its bytes."""

    def __init__(self, path, data_start, dtype, shape, offsets):
        self.path, self.data_start, self.stored, self.shape, self.offsets = path, data_start, dtype, shape, offsets
        self.dtype = np.dtype(np.float32) if dtype == "BF16" else np.dtype(DTYPES[dtype]).newbyteorder("=")

    def read(self):
        """The tensor as a native-order host NumPy array."""
        begin, end = self.offsets
        raw = np.empty(end - begin, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            if f.readinto(raw) != raw.size:
                _fail(self.path, f"a tensor is cut short at byte {self.data_start + begin} (the file is truncated)")
        if self.stored == "F32" and np.little_endian:
            return raw.view(np.float32).reshape(self.shape)  # read in place: no second copy
        return decode_tensor(raw, self.stored, self.shape)


def open_safetensors(path):
    """(name -> StoredTensor, metadata dict), with the whole header checked and no tensor read yet:
    a loader can then read one tensor at a time, so it never holds the file and its copy at once.
    FileNotFoundError if absent; ValueError if damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            _fail(path, f"truncated: {size} bytes, but a safetensors file starts with an 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > _MAX_HEADER:
            _fail(path, f"header length {n} does not fit in the file's {size} bytes (truncated or not safetensors)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            _fail(path, f"header is not valid UTF-8 JSON ({type(exc).__name__}: {exc})")
    if not isinstance(header, dict):
        _fail(path, f"header must be a JSON object; got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        _fail(path, "__metadata__ must map strings to strings")
    entries = {name: tensor_entry(path, name, info, size - 8 - n) for name, info in header.items()}
    spans = sorted((off[0], off[1], name) for name, (_, _, off) in entries.items() if off[1] > off[0])
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            _fail(path, f"tensors {first!r} and {second!r} overlap in the data buffer")
    return {name: StoredTensor(path, 8 + n, *entry) for name, entry in entries.items()}, metadata


def read_safetensors(path):
    """(name -> NumPy array, metadata dict). FileNotFoundError if absent; ValueError if damaged."""
    stored, metadata = open_safetensors(path)
    return {name: t.read() for name, t in stored.items()}, metadata


def write_safetensors(path, tensors, metadata=None):
    """Write name -> array (host or device; float, int or bool) to ``path`` atomically."""
    from safetensors.numpy import save

    from ..backend import to_numpy
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise TypeError("write_safetensors: tensors must be a dict from names (str) to arrays")
    host = {}
    for name, value in tensors.items():
        arr = np.ascontiguousarray(to_numpy(value))
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"write_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        host[name] = arr
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(host, metadata=meta or None))
