"""The .safetensors format, read and written without torch: the ``safetensors`` package checks what
is read; this module adds only what it cannot do for us.

    [8 bytes: little-endian u64 N][N bytes: JSON header][raw little-endian tensor bytes]
    header = {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
              "__metadata__": {"key": "value"}}            (offsets relative to the byte buffer)

What the package does: ``safe_open(path, framework="numpy")`` parses and validates the header
(JSON, dtypes, shapes, offsets that tile the buffer exactly, sizes that match dtype × shape, the
file's length). A damaged file therefore gives its error,
which ``open_safetensors`` re-raises as a ValueError naming the file. No pickle anywhere.

What is done here, because the package cannot:

* **Reads that leave no file pages behind.** ``safe_open`` maps the file into memory; every tensor
  read through one handle leaves its pages resident, so loading a checkpoint through it raises the
  process's RSS by the whole file (measured: +200 MB for a 200 MB file, gone only when the handle
  closes). ``StoredTensor.read`` instead reads one tensor's bytes with ``readinto`` into a buffer of
  its own, so a loader's peak is the model plus about one tensor.
* **bfloat16.** NumPy has no bfloat16 (``get_tensor`` raises for it); a bf16 value is the top half
  of a float32, so it is widened exactly: ``(bits as uint32) << 16`` viewed as float32.
* **Writes that hold no copy of the file.** ``safetensors.numpy.save`` copies every tensor and then
  builds the whole file in one buffer: saving a model costs about twice its size again (measured:
  +1.9 GB over the 0.5 GB of GPT-2 small in ``merge``). ``write_safetensors`` computes the header
  the package would write (same order, same bytes) and streams each array's own bytes after it,
  through ``atomic.atomic_write_parts`` (a temporary file, fsynced, renamed; none left on failure).

The API, for any loader (GPT-2's ``gpt2_checkpoint.py``, a sharded Llama checkpoint...):

    tensors, metadata = open_safetensors(path)     # name -> StoredTensor; header checked, nothing read
    t = tensors["model.embed_tokens.weight"]
    t.shape, t.stored, t.dtype                      # (V, C), "BF16", float32 (the dtype read() gives)
    w = t.read()                                    # as stored (bf16 widened to float32)
    w = t.read(np.float32)                          # or cast on the way in (one copy at most)
    words = t.read_raw()                            # as stored: a BF16 tensor's uint16 words, not widened

A sharded checkpoint (``model.safetensors.index.json`` maps names to shard files) is one
``open_safetensors`` per shard, the dicts merged, then ``read()`` tensor by tensor: the shards'
headers cost nothing, and at most one tensor is held beside the model.
"""

import itertools
import json
import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from ..backend import to_numpy
from .atomic import atomic_write_parts

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
# what the writer names a NumPy dtype (kind, itemsize) in the header
STORED = {("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16", ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16",
          ("i", 1): "I8", ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8", ("b", 1): "BOOL"}
# the package's Dtype enum order (safetensors/src/tensor.rs), by which it sorts the tensors it writes
ENUM_RANK = {name: rank for rank, name in enumerate(
    ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"])}


def decode_tensor(raw, stored, shape):
    """A tensor's raw little-endian bytes as a native-order NumPy array (bfloat16: its uint16 words)."""
    arr = np.frombuffer(raw, dtype=DTYPES[stored]).reshape(shape)
    return arr.astype(arr.dtype.newbyteorder("="))  # a native-order, writable copy


def widened(arr, stored):
    """A decoded tensor's values: bfloat16's uint16 words widened to float32 (exact: the high half of a
    float32), any other dtype as it is."""
    return (arr.astype(np.uint32) << 16).view(np.float32) if stored == "BF16" else arr


class StoredTensor:
    """One tensor of a checked file: ``shape``, ``stored`` (the file's dtype name), ``dtype`` (what
    ``read()`` returns) and where its bytes are; ``read()`` loads just those bytes."""

    def __init__(self, path, start, stored, shape):
        self.path, self.start, self.stored, self.shape = path, start, stored, tuple(shape)
        self.nbytes = math.prod(self.shape) * np.dtype(DTYPES[stored]).itemsize
        self.dtype = np.dtype(np.float32) if stored == "BF16" else np.dtype(DTYPES[stored]).newbyteorder("=")

    def read(self, dtype=None):
        """The tensor as a host NumPy array: as stored (bfloat16 widened to float32), or cast to ``dtype``."""
        out = widened(self.read_raw(), self.stored)
        return out if dtype is None else out.astype(dtype, copy=False)

    def read_raw(self):
        """The tensor as stored, in native byte order; bfloat16 as its raw 16-bit words (uint16)."""
        raw = np.empty(self.nbytes, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.start)
            if f.readinto(raw) != raw.size:
                raise ValueError(f"{self.path}: a tensor is cut short at byte {self.start} (the file changed or "
                                 f"was truncated after it was opened)")
        if self.stored in ("F32", "BF16") and np.little_endian:  # read in place: no second copy
            return raw.view(DTYPES[self.stored]).reshape(self.shape)
        return decode_tensor(raw, self.stored, self.shape)


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


def _array(value):
    """The array behind a value, left where it lives: a Tensor's ``.data``, a host or device array
    as is, anything else (a list, a Python number) as a NumPy array."""
    if hasattr(value, "requires_grad") and hasattr(value, "data"):
        value = value.data
    return value if hasattr(value, "dtype") and hasattr(value, "shape") else np.asarray(value)


# What ``write_safetensors(..., float_dtype=)`` may write a floating tensor as.
FLOAT_STORED = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def encode_bfloat16(x):
    """float32 values as bfloat16 bits (uint16), rounded to nearest, ties to even, as torch's
    ``.to(torch.bfloat16)``: the top half of ``bits + 0x7FFF + (bit 16)``; a NaN stays a (quiet) NaN."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    out[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def _cast(arr, stored):
    """A host array as the bytes of ``stored`` ("F32", "BF16", "F16")."""
    return encode_bfloat16(arr) if stored == "BF16" else arr.astype(DTYPES[stored], copy=False)


def _stored(arr, float_stored=None):
    return float_stored if float_stored and arr.dtype.kind == "f" else STORED[_dtype_key(arr)]


def safetensors_header(arrays, metadata=None, float_stored=None):
    """The header bytes the ``safetensors`` package writes for ``arrays`` (name -> array, host or
    device; only dtype and shape are read), and the names in the order their bytes follow it.

    As the package does: tensors sorted by dtype, widest first (its ``Dtype`` enum order,
    reversed), then by name; offsets tile the buffer in that order; compact JSON with
    ``__metadata__`` first; the header padded with spaces to a multiple of 8 bytes, after its
    8-byte little-endian length."""
    order = sorted(arrays, key=lambda name: (-ENUM_RANK[_stored(arrays[name], float_stored)], name))
    header, offset = {"__metadata__": metadata} if metadata else {}, 0
    for name in order:
        arr = arrays[name]
        cast = float_stored and arr.dtype.kind == "f"
        nbytes = math.prod(arr.shape) * (np.dtype(DTYPES[float_stored]).itemsize if cast else arr.dtype.itemsize)
        header[name] = {"dtype": _stored(arr, float_stored), "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob, order


def _dtype_key(arr):
    return arr.dtype.kind, arr.dtype.itemsize


def _tensor_bytes(arrays, order, float_stored=None):
    """Each tensor's bytes in turn, as a flat uint8 view: C-contiguous and little-endian, copied
    only where the array is not already (and, on CuPy, brought to the host one tensor at a time);
    with ``float_stored``, a floating tensor is converted to it then, one tensor at a time."""
    for name in order:
        arr = arrays[name]
        host = arr if isinstance(arr, np.ndarray) else to_numpy(arr)
        if float_stored and host.dtype.kind == "f":
            host = _cast(host, float_stored)
        host = np.ascontiguousarray(host, dtype=host.dtype.newbyteorder("<"))
        yield host.reshape(-1).view(np.uint8)


def write_safetensors(path, tensors, metadata=None, float_dtype=None):
    """Write name -> array (host or device; float, int or bool) to ``path`` atomically, streamed:
    the header, then each tensor's bytes straight from its array, so writing holds no copy of the
    file (``safetensors.numpy.save`` builds the whole file in memory beside a copy of every tensor).
    The file is byte for byte the package's (metadata keys aside, which it writes in hash order).
    ``float_dtype`` ("float32", "bfloat16", "float16"): every floating tensor is written as that,
    converted one tensor at a time (bfloat16 rounded to nearest even, as torch rounds)."""
    if float_dtype is not None and float_dtype not in FLOAT_STORED:
        raise ValueError(f"write_safetensors: float_dtype must be one of {list(FLOAT_STORED)}; got {float_dtype!r}")
    float_stored = FLOAT_STORED.get(float_dtype)
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise TypeError("write_safetensors: tensors must be a dict from names (str) to arrays")
    if "__metadata__" in tensors:
        raise ValueError("write_safetensors: '__metadata__' is the header's metadata key, not a tensor name")
    arrays = {name: _array(value) for name, value in tensors.items()}
    for name, arr in arrays.items():
        if _dtype_key(arr) not in STORED:
            raise TypeError(f"write_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}; "
                            f"writable: float16/32/64, (u)int8/16/32/64, bool")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    header, order = safetensors_header(arrays, meta, float_stored)
    atomic_write_parts(path, itertools.chain((header,), _tensor_bytes(arrays, order, float_stored)))
