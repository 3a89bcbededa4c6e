"""The .safetensors format, read and written without torch: the ``safetensors`` package checks and
writes; this module adds only what it cannot do for us.

    [8 bytes: little-endian u64 N][N bytes: JSON header][raw little-endian tensor bytes]
    header = {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
              "__metadata__": {"key": "value"}}            (offsets relative to the byte buffer)

What the package does: ``safe_open(path, framework="numpy")`` parses and validates the header
(JSON, dtypes, shapes, offsets that tile the buffer exactly, sizes that match dtype × shape, the
file's length), and ``safetensors.numpy.save`` writes. A damaged file therefore gives its error,
which ``open_safetensors`` re-raises as a ValueError naming the file. No pickle anywhere.

What is done here, because the package cannot:

* **Reads that leave no file pages behind.** ``safe_open`` maps the file into memory; every tensor
  read through one handle leaves its pages resident, so loading a checkpoint through it raises the
  process's RSS by the whole file (measured: +200 MB for a 200 MB file, gone only when the handle
  closes). ``StoredTensor.read`` instead reads one tensor's bytes with ``readinto`` into a buffer of
  its own, so a loader's peak is the model plus about one tensor.
* **bfloat16.** NumPy has no bfloat16 (``get_tensor`` raises for it); a bf16 value is the top half
  of a float32, so it is widened exactly: ``(bits as uint32) << 16`` viewed as float32.

The API, for any loader (GPT-2's ``gpt2_checkpoint.py``, a sharded Llama checkpoint...):

    tensors, metadata = open_safetensors(path)     # name -> StoredTensor; header checked, nothing read
    t = tensors["model.embed_tokens.weight"]
    t.shape, t.stored, t.dtype                      # (V, C), "BF16", float32 (the dtype read() gives)
    w = t.read()                                    # as stored (bf16 widened to float32)
    w = t.read(np.float32)                          # or cast on the way in (one copy at most)

A sharded checkpoint (``model.safetensors.index.json`` maps names to shard files) is one
``open_safetensors`` per shard, the dicts merged, then ``read()`` tensor by tensor: the shards'
headers cost nothing, and at most one tensor is held beside the model.
"""

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ..backend import to_numpy
from .atomic import atomic_write_bytes

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def decode_tensor(raw, stored, shape):
    """A tensor's raw little-endian bytes as a native-order NumPy array (bfloat16 widened to float32)."""
    arr = np.frombuffer(raw, dtype=DTYPES[stored]).reshape(shape)
    if stored == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="))  # a native-order, writable copy


class StoredTensor:
    """One tensor of a checked file: ``shape``, ``stored`` (the file's dtype name), ``dtype`` (what
    ``read()`` returns) and where its bytes are; ``read()`` loads just those bytes."""

    def __init__(self, path, start, stored, shape):
        self.path, self.start, self.stored, self.shape = path, start, stored, tuple(shape)
        self.nbytes = math.prod(self.shape) * np.dtype(DTYPES[stored]).itemsize
        self.dtype = np.dtype(np.float32) if stored == "BF16" else np.dtype(DTYPES[stored]).newbyteorder("=")

    def read(self, dtype=None):
        """The tensor as a host NumPy array: as stored (bfloat16 widened to float32), or cast to ``dtype``."""
        raw = np.empty(self.nbytes, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.start)
            if f.readinto(raw) != raw.size:
                raise ValueError(f"{self.path}: a tensor is cut short at byte {self.start} (the file changed or "
                                 f"was truncated after it was opened)")
        if self.stored == "F32" and np.little_endian:
            out = raw.view(np.float32).reshape(self.shape)  # read in place: no second copy
        else:
            out = decode_tensor(raw, self.stored, self.shape)
        return out if dtype is None else out.astype(dtype, copy=False)


def open_safetensors(path):
    """(name -> StoredTensor, metadata dict), with the header checked by the ``safetensors`` package
    and no tensor read yet. FileNotFoundError if absent; ValueError if damaged or of a dtype NumPy
    cannot hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            names = f.offset_keys()  # in the order of their bytes, which tile the buffer (checked)
            facts = [(name, f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in names]
            metadata = f.metadata() or {}
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a valid safetensors file (damaged or truncated): {exc}") from None
    with open(path, "rb") as f:
        start = 8 + int.from_bytes(f.read(8), "little")  # the data buffer begins after the header
    tensors = {}
    for name, stored, shape in facts:
        if stored not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {stored!r}; readable dtypes: {', '.join(DTYPES)}")
        tensors[name] = StoredTensor(path, start, stored, shape)
        start += tensors[name].nbytes
    return tensors, metadata


def read_safetensors(path):
    """(name -> NumPy array, metadata dict). FileNotFoundError if absent; ValueError if damaged."""
    stored, metadata = open_safetensors(path)
    return {name: t.read() for name, t in stored.items()}, metadata


def write_safetensors(path, tensors, metadata=None):
    """Write name -> array (host or device; float, int or bool) to ``path`` atomically."""
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
