"""A fingerprint of a model's weights that depends on the tensors, not on the files holding them.

An adapter records the fingerprint of the base it was trained on, so that it is not applied to
another base by mistake. A hash of the weights file said "another base" for the same weights saved
again as shards, or as float32 instead of bfloat16 (issue 35 item 5). The fingerprint hashes, for
each tensor in name order, its name, its shape and a strided sample of its values read as float32:

    sha256( for name in sorted(tensors): name, shape, float32(values at SAMPLES evenly spaced flat indices) )

It is cheap (a few bytes per tensor are read, not the whole file) and a sample, not a proof: two
bases that differ only between the sampled positions share a fingerprint. Training changes every
weight of a layer it touches, and a different model differs almost everywhere, so in practice a
sample is enough; a full check would cost reading every byte of the base.
"""

import hashlib
import math

import numpy as np

from .safetensors_file import DTYPES, decode_tensor, widened

SAMPLES = 64  # values sampled per tensor


def sample_positions(shape, n=SAMPLES):
    """At most ``n`` flat indices evenly spaced over a tensor of ``shape``, its first and last included."""
    count = math.prod(shape)
    return np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(np.int64)) if count else \
        np.zeros(0, np.int64)


def tensor_sample(tensor, n=SAMPLES):
    """The values of a ``StoredTensor`` at ``sample_positions``, as float32, read without the rest of it."""
    itemsize = np.dtype(DTYPES[tensor.stored]).itemsize
    raw = bytearray()
    with open(tensor.path, "rb") as f:
        for i in sample_positions(tensor.shape, n):
            f.seek(tensor.start + int(i) * itemsize)
            raw += f.read(itemsize)
    return widened(decode_tensor(bytes(raw), tensor.stored, (len(raw) // itemsize,)), tensor.stored).astype(np.float32)


def weights_fingerprint(tensors):
    """Hex SHA-256 over name -> StoredTensor (one file's or every shard's): names, shapes, sampled values."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(f"{name}:{list(tensors[name].shape)};".encode())
        digest.update(tensor_sample(tensors[name]).astype("<f4").tobytes())
    return digest.hexdigest()


def gguf_fingerprint(tensors):
    """Hex SHA-256 over HF name -> GGUFTensor (io/gguf_read.py): names, shapes and a strided sample of
    each tensor's stored bytes (its blocks as the file holds them: a GGUF base is its quantized file)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        raw = np.asarray(tensors[name].tensor.data).reshape(-1).view(np.uint8)
        digest.update(f"{name}:{list(tensors[name].shape)};".encode())
        digest.update(raw[sample_positions(raw.shape)].tobytes())
    return digest.hexdigest()
