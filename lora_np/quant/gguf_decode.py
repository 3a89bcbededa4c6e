"""Fast NumPy decoders for the GGUF block types a LoRA base is trained on: Q4_0, Q4_1, Q5_0 and Q8_0,
and Q6_K, the type llama.cpp's quantizer gives a model's output / tied token table.

A block of 32 weights, as llama.cpp lays it out (little-endian):

    Q4_0  18 bytes: d (float16), qs (16 bytes)           w[j] = d · (q[j] - 8)
    Q4_1  20 bytes: d, m (float16), qs (16 bytes)        w[j] = d · q[j] + m
    Q5_0  22 bytes: d, qh (32 bits), qs (16 bytes)       w[j] = d · (q[j] | qh bit j << 4 - 16)
    Q8_0  34 bytes: d (float16), q (32 int8)             w[j] = d · q[j]

with the 4-bit codes q[j] = qs[j] & 0xF for j < 16 and q[j] = qs[j - 16] >> 4 for j ≥ 16 (the low
nibbles first). The reference is llama.cpp's own NumPy codec, ``gguf.quants.<TYPE>.dequantize_blocks``
(``reference_decode``): a dozen readable lines a type, but each of its steps allocates a new array
and its nibble split runs a 4-D broadcast shift, ~4 ns a weight. The decoders here compute the same
float32 operations in the same order (so the same bits: tests/test_gguf.py compares them on random
blocks and on every tensor of the shipped GGUF files) in four passes over the tile, written into
the caller's float32 array (``out``, e.g. the kept tile of ``linear_op.quant_linear``):

1. the nibbles of every byte of the tile at once, on 16- or 32-bit words (a flat loop: the block
   headers are split too and ignored);
2. the codes widened into ``out``, low nibbles to w[0:16], high to w[16:32] (uint8 → float32 exact);
   (Q5_0: the fifth bits, ``np.unpackbits`` of qh, or-ed into the codes first);
3. ``out *= d`` per block (``out -= 8`` or ``16`` first for Q4_0 / Q5_0: exact in float32, as gguf's int8);
4. ``out += m`` per block (Q4_1).

Q6_K (llama.cpp's ``block_q6_K``): a super-block of 256 weights in 210 bytes, ql (128 bytes: the
low 4 bits), qh (64 bytes: the high 2 bits), 16 int8 sub-block scales, d (float16):

    w[i] = (d · scale[i // 16]) · (q[i] - 32),   q[i] = low 4 bits | high 2 bits << 4  (0..63)

each half of 128 weights taking ql[64 h : 64 h + 64] and qh[32 h : 32 h + 32]: its four quarters of 32
are the low nibbles of ql's first and second 32 bytes, then their high nibbles, and bits 0-1, 2-3, 4-5,
6-7 of the 32 qh bytes. ``decode_q6_k`` builds the 6-bit codes on 32-bit words, widens them, subtracts
32 and multiplies by d · scale, as gguf.quants.Q6_K does (the same float32 products: the same bits),
~4x faster (its 4-D broadcast shifts: ~19 ns a weight on the AMD EPYC; here ~5).

Types without a decoder here (Q5_1, Q4_K, Q5_K, F16 ...) go to the reference (``decode_blocks``).
"""

import numpy as np

BLOCK = 32
SUPER_BLOCK = 256  # the K-quants' block
_WORDS = {2: (np.uint16, np.uint16(0x0F0F)), 4: (np.uint32, np.uint32(0x0F0F0F0F))}


def _scale(blocks, k):
    """The k-th float16 of each block (d: k=0, Q4_1's m: k=1) as a float32 column (n, 1)."""
    return blocks.view(np.float16)[:, k].astype(np.float32)[:, None]


def _nibbles(blocks, first):
    """(low, high): the 4-bit codes q[0:16] and q[16:32] of the 16 bytes from ``first`` on of each block,
    two (n, 16) uint8 views."""
    word, mask = _WORDS[4 if blocks.shape[1] % 4 == 0 else 2]
    words = blocks.view(word)                                     # (n, bytes / word size): whole blocks
    low = np.bitwise_and(words, mask)                             # qs & 0xF, every byte at once
    high = np.right_shift(words, 4)
    high &= mask                                                  # qs >> 4
    return low.view(np.uint8)[:, first:first + 16], high.view(np.uint8)[:, first:first + 16]


def _widen_nibbles(out, blocks, first):
    """out (n, 32) ← the 4-bit codes of the 16 bytes from ``first`` on of each block (low nibbles first)."""
    halves = out.reshape(-1, 2, BLOCK // 2)
    for half, codes in zip((halves[:, 0], halves[:, 1]), _nibbles(blocks, first)):
        np.copyto(half, codes)


def decode_q4_0(blocks, out):
    """w = d · (q - 8), into ``out`` (n, 32) float32."""
    _widen_nibbles(out, blocks, 2)
    out -= np.float32(8)
    out *= _scale(blocks, 0)
    return out


def decode_q4_1(blocks, out):
    """w = d · q + m, into ``out`` (n, 32) float32."""
    _widen_nibbles(out, blocks, 4)
    out *= _scale(blocks, 0)
    out += _scale(blocks, 1)
    return out


def decode_q5_0(blocks, out):
    """w = d · (q - 16), into ``out`` (n, 32) float32; q = the 4-bit code | bit j of qh << 4."""
    codes = np.empty((blocks.shape[0], 2, BLOCK // 2), np.uint8)
    codes[:, 0], codes[:, 1] = _nibbles(blocks, 6)
    fifth = np.unpackbits(blocks[:, 2:6], axis=1, bitorder="little")  # (n, 32): bit j of qh (little-endian)
    fifth <<= 4
    codes.reshape(-1, BLOCK)[:] |= fifth
    np.copyto(out, codes.reshape(-1, BLOCK))
    out -= np.float32(16)
    out *= _scale(blocks, 0)
    return out


def decode_q8_0(blocks, out):
    """w = d · q (q int8), into ``out`` (n, 32) float32."""
    np.copyto(out, blocks[:, 2:].view(np.int8))
    out *= _scale(blocks, 0)
    return out


Q6_K_HALF_WORDS = 8  # a half's 32 qh bytes as 32-bit words
_LOW_NIBBLES, _HIGH_BITS = np.uint32(0x0F0F0F0F), np.uint32(0x30303030)


def decode_q6_k(blocks, out):
    """w = d · scale · (q - 32) per sub-block of 16, into ``out`` (n, 256) float32 (blocks (n, 210))."""
    n = blocks.shape[0]
    codes = np.empty((n, 2, 4, 32), np.uint8)                     # (block, half, quarter, 32 weights)
    ql = blocks[:, :128].copy().view(np.uint32)                   # aligned words of the low bits
    codes[:, :, 0:2] = np.bitwise_and(ql, _LOW_NIBBLES).view(np.uint8).reshape(n, 2, 2, 32)
    ql >>= np.uint32(4)
    ql &= _LOW_NIBBLES
    codes[:, :, 2:4] = ql.view(np.uint8).reshape(n, 2, 2, 32)
    qh = blocks[:, 128:192].copy().view(np.uint32).reshape(n, 2, Q6_K_HALF_WORDS)
    quarters = codes.view(np.uint32).reshape(n, 2, 4, Q6_K_HALF_WORDS)
    for k in range(4):                                            # bits 2k, 2k+1 of qh -> bits 4, 5 of q
        high = np.left_shift(qh, np.uint32(4 - 2 * k)) if k < 2 else np.right_shift(qh, np.uint32(2 * k - 4))
        high &= _HIGH_BITS
        quarters[:, :, k] |= high
    sub_blocks = out.reshape(n, 16, 16)
    np.copyto(sub_blocks, codes.reshape(n, 16, 16))
    sub_blocks -= np.float32(32)
    d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32)
    sub_blocks *= (d * blocks[:, 192:208].view(np.int8).astype(np.float32))[:, :, None]
    return out


FAST = {"Q4_0": (decode_q4_0, BLOCK), "Q4_1": (decode_q4_1, BLOCK), "Q5_0": (decode_q5_0, BLOCK),
        "Q8_0": (decode_q8_0, BLOCK), "Q6_K": (decode_q6_k, SUPER_BLOCK)}  # type: (decoder, values a block)


def reference_decode(type_name, blocks):
    """llama.cpp's NumPy codec (the gguf package) on (n, type_size) uint8 blocks -> (n, block size) float32."""
    import gguf
    return getattr(gguf.quants, type_name).dequantize_blocks(blocks)


def decode_blocks(type_name, blocks, out=None):
    """(n, type_size) uint8 blocks of ``type_name`` -> their (n, block size) float32 values, written
    into ``out`` when given (a C-contiguous float32 array of that many values)."""
    if type_name not in FAST:
        values = reference_decode(type_name, blocks)
        if out is None:
            return values
        np.copyto(out.reshape(values.shape), values)
        return out
    fast, size = FAST[type_name]
    out = np.empty((blocks.shape[0], size), np.float32) if out is None else out.reshape(-1, size)
    return fast(np.ascontiguousarray(blocks), out)
