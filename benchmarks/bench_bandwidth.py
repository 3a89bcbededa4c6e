"""How fast one and two threads read weights from memory, and whether a bf16 base could beat float32 in NumPy.

A decode step reads every weight once, so its floor is the memory bandwidth a GEMV gets. This script
measures, on 1 and on 2 threads (plain threads, each on its share of the work; NumPy and BLAS release
the GIL, BLAS itself on one thread):

* ``sum``: ``a.sum()`` over a 1 GiB float32 array (each thread its half): the plain read rate;
* ``f32 gemv``: y = Wᵀx over 84 float32 weights of 3,072 × 1,024 (Qwen3-0.6B's MLP shape, 1.06 GB in
  all; each thread its half of every weight's output rows), as a decode step reads them;
* ``bf16 astype``: the same weights kept as bf16 words, each band of rows widened as
  ``quant/bf16.py`` widens it (``left_shift(words, 16, dtype=uint32)``: a new array per band), then its GEMV;
* ``bf16 pairs``: the words viewed as uint32 pairs (w₂ⱼ in the low half, w₂ⱼ₊₁ in the high half), widened
  into one preallocated band with a shift (even inputs) and a mask (odd inputs), two GEMVs per band on
  x's even and odd entries: contiguous integer ufuncs, no new arrays;
* ``bf16 zeroed``: the words copied into the high halves of a zeroed float32 band
  (``band.view(uint16)[:, 1::2] = words``: one strided copy), then its GEMV.

A bf16 weight is half the bytes, so it beats float32 only if widening a band costs less than reading the
other half: compare each bf16 row's wall time with ``f32 gemv`` at the same thread count. Rounds are
interleaved; medians. Timings are wall and CPU ms per pass over the 1.06 GB of float32-equivalent weights.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_bandwidth.py [--rounds 3] [--band 128]
"""

import argparse
import os
import threading
import time

import numpy as np

OUT, IN, N_WEIGHTS = 3072, 1024, 84


def split(n, threads):
    return [n * i // threads for i in range(threads + 1)]


def on_threads(fn, threads):
    """fn(i, threads) on ``threads`` threads (this one included); returns (wall ms, CPU ms of the process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    others = [threading.Thread(target=fn, args=(i, threads)) for i in range(1, threads)]
    for t in others:
        t.start()
    fn(0, threads)
    for t in others:
        t.join()
    return 1e3 * (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu)


def kernels(band):
    rng = np.random.default_rng(0)
    flat = np.ones(1 << 28, np.float32)
    wts = [rng.standard_normal((OUT, IN), np.float32) for _ in range(N_WEIGHTS)]  # Wᵀ (out, in), as nn.Linear
    words = [(w.view(np.uint32) >> 16).astype(np.uint16) for w in wts]              # their bf16 words (truncated)
    x = rng.standard_normal(IN).astype(np.float32)
    x_even, x_odd = x[0::2].copy(), x[1::2].copy()
    y = np.empty(OUT, np.float32)

    def read_sum(i, n):
        e = split(flat.size, n)
        flat[e[i]:e[i + 1]].sum()

    def f32(i, n):
        e = split(OUT, n)
        for w in wts:
            np.matmul(w[e[i]:e[i + 1]], x, out=y[e[i]:e[i + 1]])

    def bf16_astype(i, n):
        e = split(OUT, n)
        for w in words:
            for r in range(e[i], e[i + 1], band):
                r1 = min(r + band, e[i + 1])
                np.matmul(np.left_shift(w[r:r1], 16, dtype=np.uint32).view(np.float32), x, out=y[r:r1])

    def bf16_pairs(i, n):
        e, buf, t = split(OUT, n), np.empty((band, IN // 2), np.uint32), np.empty(band, np.float32)
        wide = buf.view(np.float32)
        for w in words:
            pairs = w.view(np.uint32)  # (out, in/2): w[:, 2j] in the low 16 bits, w[:, 2j+1] in the high
            for r in range(e[i], e[i + 1], band):
                r1 = min(r + band, e[i + 1])
                m = r1 - r
                np.left_shift(pairs[r:r1], 16, out=buf[:m])
                np.matmul(wide[:m], x_even, out=y[r:r1])
                np.bitwise_and(pairs[r:r1], np.uint32(0xFFFF0000), out=buf[:m])
                np.matmul(wide[:m], x_odd, out=t[:m])
                y[r:r1] += t[:m]

    def bf16_zeroed(i, n):
        e, buf = split(OUT, n), np.zeros((band, IN), np.float32)
        halves = buf.view(np.uint16)
        for w in words:
            for r in range(e[i], e[i + 1], band):
                r1 = min(r + band, e[i + 1])
                halves[:r1 - r, 1::2] = w[r:r1]
                np.matmul(buf[:r1 - r], x, out=y[r:r1])

    return {"sum (1 GiB)": read_sum, "f32 gemv": f32, "bf16 astype": bf16_astype, "bf16 pairs": bf16_pairs,
            "bf16 zeroed": bf16_zeroed}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--band", type=int, default=128, help="rows of Wᵀ widened at a time (bf16 rows)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)  # BLAS on one thread: the threads here are the only parallelism
    print(f"load average {os.getloadavg()[:2]}; band {args.band} rows", flush=True)
    cases, times = kernels(args.band), {}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            for threads in (1, 2):
                times.setdefault((name, threads), []).append(on_threads(fn, threads))
    nbytes = 4 * OUT * IN * N_WEIGHTS
    for (name, threads), runs in times.items():
        wall, cpu = np.median([w for w, _ in runs]), np.median([c for _, c in runs])
        size = 4 << 28 if name.startswith("sum") else nbytes
        label = f"{threads} thread{'s' if threads > 1 else ' '}"
        print(f"{name:12s} {label}: {wall:7.1f} ms wall ({size / wall / 1e6:5.1f} GB/s of float32), {cpu:7.1f} ms CPU",
              flush=True)
    print(f"load average {os.getloadavg()[:2]}")


if __name__ == "__main__":
    main()
