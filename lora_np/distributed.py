"""Data parallelism over MPI: N processes ("ranks") each take 1/N of every global batch, sum their
gradients with one ``Allreduce`` per step, and take the same optimizer step.

    mpiexec -n 2 python -m lora_np finetune --base gpt2 --data notes.txt --out run --batch-size 8

Under ``mpiexec`` each rank runs the same program on the same data with the same seed, so every
rank draws the same global batch of ``B`` rows; rank ``r`` of ``N`` keeps rows
``[r·B/N, (r+1)·B/N)`` (:func:`shard_batch`). The loss is a mean over the global batch's counted
targets, ``L = (1/W) Σ_i ℓ_i`` with ``W = Σ_r W_r`` (``W_r`` the targets rank r holds); rank r
computes the mean over its own rows, ``L_r = (1/W_r) Σ_{i∈r} ℓ_i``, so

    ∇L = (1/W) Σ_r W_r ∇L_r

which :func:`allreduce_gradients` computes: each rank packs ``W_r ∇L_r`` and ``W_r`` into one flat
buffer, one ``Allreduce(SUM)`` adds the buffers of all ranks, and every rank divides by the sum of
the ``W_r``. (Dividing by N instead is right only when every rank holds as many counted targets.)
Every rank then holds the gradient of one process on the whole batch, up to float32 rounding (the
sum is taken in another order), applies the same clipping and AdamW step, and stays identical.

With LoRA only the adapter's gradients travel: 4 bytes per trainable parameter per step.

MPI is optional, like CuPy: ``mpi4py`` is imported only when a run of more than one rank starts
(:func:`init`), never by ``import lora_np``. Only rank 0 writes files (:func:`is_main`).

What happens when a rank fails (measured with MPICH 5): a rank killed by a signal makes ``mpiexec``
kill the others at once; but a rank that raises and exits *normally* hangs in ``MPI_Finalize``
while the others wait in their next ``Allreduce``, forever. So a rank that fails prints its error
and calls ``MPI_Abort`` (:func:`abort`), which stops every rank; checkpoints are written atomically,
so the last complete one is kept. A rank that hangs is not an error MPI sees: with
``LORA_NP_MPI_TIMEOUT`` set, a rank that waits longer than that for the others aborts the job.
A Ctrl-C reaches every rank, but not between the same two steps:
the stop request travels in the step's buffer (:func:`allreduce_gradients`'s ``values``), so the
ranks stop after the same step.
"""

import contextlib
import hashlib
import json
import os
import sys
import time
import traceback

import numpy as np

from . import backend

INSTALL_HINT = "pip install -r requirements-distributed.txt  (installs mpi4py and MPICH)"
# Set by the MPI launchers for every rank they start: Open MPI, MPICH/Intel MPI (hydra), MVAPICH.
LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")
ABORT_GRACE_SECONDS = 0.5
CUDA_AWARE_VARIABLE = "LORA_NP_MPI_CUDA_AWARE"  # =1: hand device buffers to MPI without a host copy
TIMEOUT_VARIABLE = "LORA_NP_MPI_TIMEOUT"  # seconds a rank waits for the others in a step before it aborts

_world = None  # (mpi4py's MPI module, its COMM_WORLD) once init() has joined a job
_timeout = None  # LORA_NP_MPI_TIMEOUT in seconds, read by init(); None: wait as long as it takes


class MPIUnavailableError(backend.BackendUnavailableError):
    """A data-parallel run was asked for (or launched) but mpi4py cannot be imported."""


class CollectiveError(ValueError):
    """A bad setting that every rank finds at the same point (ranks that disagree, a global batch
    that does not split): no rank waits for another, so each can stop normally; rank 0 reports it."""


def launched_ranks(environ=None):
    """How many ranks the MPI launcher started (1 when not under ``mpiexec``), read from the
    variables it sets, so that no MPI library is loaded to find out."""
    environ = os.environ if environ is None else environ
    sizes = [environ[name].strip() for name in LAUNCHER_SIZE_VARIABLES if environ.get(name, "").strip()]
    return max([int(s) for s in sizes if s.isdigit()] or [1])


def init(required=False):
    """Join the MPI job if there is one of more than one rank (or ``required``): the world size.

    Without a launcher and without ``required`` nothing is imported and the run is one process.
    ``required`` (the CLI's ``--data-parallel``) without mpi4py raises :class:`MPIUnavailableError`
    naming the install, and so does a launch of several ranks without it (each rank would otherwise
    train alone and all would write the same files).
    """
    global _world, _timeout
    if _world is None and (required or launched_ranks() > 1):
        _timeout = _read_timeout()
        try:
            from mpi4py import MPI
        except ImportError:
            raise MPIUnavailableError(f"data-parallel training needs mpi4py, which is not installed: "
                                      f"{INSTALL_HINT}") from None
        _world = (MPI, MPI.COMM_WORLD)
    return world_size()


def _read_timeout():
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    try:
        seconds = float(text) if text else None
    except ValueError:
        seconds = -1.0
    if seconds is not None and not seconds > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds (or unset: no limit); got {text!r}")
    return seconds


def world_size():
    """Ranks in the job (1 before :func:`init`, or in a single process)."""
    return _world[1].Get_size() if _world else 1


def rank():
    """This process's rank, 0 … world_size() - 1 (0 in a single process)."""
    return _world[1].Get_rank() if _world else 0


def is_main():
    """True on rank 0, the one rank that writes files and prints progress."""
    return rank() == 0


def local_batch_size(batch_size):
    """Rows per rank of a global batch of ``batch_size``; refuses one that does not split evenly."""
    n = world_size()
    if batch_size % n:
        lower, upper = batch_size // n * n, -(-batch_size // n) * n
        raise CollectiveError(f"--batch-size is the global batch, split over {n} ranks, so it must be a multiple "
                              f"of {n}; got {batch_size} (try {lower or n} or {upper})")
    return batch_size // n


def shard_batch(*arrays):
    """This rank's rows of a global batch: rows [r·b, (r+1)·b) of each array, b = B / world_size().
    One array in, one out; several in, a tuple out."""
    b = local_batch_size(len(arrays[0]))
    shards = tuple(a[rank() * b:(rank() + 1) * b] for a in arrays)
    return shards if len(shards) > 1 else shards[0]


def allreduce_gradients(params, weight=1.0, values=()):
    """Replace each parameter's gradient by the weighted mean over ranks, in one Allreduce.

    ``g ← Σ_r w_r g_r / Σ_r w_r``, with ``w_r = weight`` on rank r: the number of targets its loss
    averages over (see the module docstring), or 1 when every rank averages over as many. A rank
    whose gradient is None (it skipped backward) sends zeros; a parameter with no gradient on any
    rank keeps None. ``values``: scalars summed across ranks in the same message (a loss times its
    weight, a stop request). Returns ``(Σ_r w_r, [Σ_r v for each value])``.

    The buffer is ``[w·g for each param (flattened) | w | values | has-grad flags]`` in the
    gradients' dtype, so a step exchanges its trainable parameters' bytes and a few more. In a
    single process nothing is exchanged and the gradients are left as they are.
    """
    params = list(params)
    if world_size() == 1:
        return float(weight), [float(v) for v in values]
    buffer = _pack(params, weight, values, _buffer_dtype(params))
    _sum_over_ranks(buffer)
    n_grads = sum(p.data.size for p in params)
    total, sums = buffer[n_grads], buffer[n_grads + 1:n_grads + 1 + len(values)]
    flags = backend.to_numpy(buffer[n_grads + 1 + len(values):])
    total_weight = float(total)
    if total_weight > 0:
        _unpack(params, buffer[:n_grads] / total, flags)
    return total_weight, [float(v) for v in backend.to_numpy(sums)]


def separate_random_streams(generator):
    """Give each rank its own stream of the device generator (dropout masks): rank r jumps its
    state r times ahead (PCG64's ``jumped``, 2^127 draws each), so the ranks' masks are
    independent and rank 0's stream is the one process's. After a resume, which restores rank 0's
    saved state on every rank, the same jump gives each rank its stream back (a jump commutes with
    drawing). A generator without ``jumped`` (CuPy's) stays shared: then rows i and b + i (b rows
    per rank) draw the same masks."""
    bit_generator = getattr(generator, "bit_generator", None)
    if rank() > 0 and hasattr(bit_generator, "jumped"):
        bit_generator.state = bit_generator.jumped(rank()).state


def message_bytes(params, n_values=0):
    """Bytes that :func:`allreduce_gradients` hands to MPI per call for ``params`` with
    ``n_values`` values (the training loop sends 2: the loss and the stop request)."""
    params = list(params)
    return _buffer_length(params, n_values) * np.dtype(_buffer_dtype(params)).itemsize


def _buffer_dtype(params):
    return np.result_type(*[p.data.dtype for p in params]) if params else np.float32


def _buffer_length(params, n_values):
    return sum(p.data.size for p in params) + 1 + n_values + len(params)


def _pack(params, weight, values, dtype):
    xp = backend.xp
    buffer = xp.zeros(_buffer_length(params, len(values)), dtype=dtype)
    offset = 0
    for p in params:
        if p.grad is not None:
            xp.multiply(p.grad.reshape(-1), weight, out=buffer[offset:offset + p.data.size])
        offset += p.data.size
    tail = [weight, *values] + [p.grad is not None for p in params]
    buffer[offset:] = backend.asarray(np.asarray(tail, dtype=dtype))
    return buffer


def _unpack(params, flat, flags):
    offset = 0
    for p, has_grad in zip(params, flags):
        if has_grad:
            p.grad = flat[offset:offset + p.data.size].reshape(p.data.shape)
        offset += p.data.size


def _sum_over_ranks(buffer):
    """``buffer`` ← its sum over ranks, in place. A device buffer goes to MPI as it is when the MPI
    library is CUDA-aware (``LORA_NP_MPI_CUDA_AWARE=1``; mpi4py reads ``__cuda_array_interface__``),
    otherwise through a host copy: an adapter's gradients are a few MB, a fraction of a
    millisecond over PCIe, so any MPI build works."""
    if world_size() == 1:
        return
    if backend.xp is np or os.environ.get(CUDA_AWARE_VARIABLE, "").strip() == "1":
        backend.synchronize()  # the GPU must have finished writing the buffer before MPI reads it
        _allreduce_sum(buffer)
        return
    host = backend.to_numpy(buffer)
    _allreduce_sum(host)
    buffer[...] = backend.asarray(host)


def _allreduce_sum(buffer):
    """One Allreduce(SUM) in place. With LORA_NP_MPI_TIMEOUT set, a rank that waits longer than that
    for the others (one has stopped without aborting, or hangs) says so and aborts the job, rather
    than waiting forever; it polls the nonblocking Iallreduce, sleeping between polls."""
    MPI, comm = _world
    if _timeout is None:
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        return
    request, deadline = comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), time.monotonic() + _timeout
    while not request.Test():
        if time.monotonic() > deadline:
            print(f"lora_np: rank {rank()} of {world_size()} waited {_timeout:g} s ({TIMEOUT_VARIABLE}) for the "
                  f"other ranks' gradients: a rank has stopped or hangs; stopping every rank", file=sys.stderr)
            abort(1)
        time.sleep(0.0005)


def _digest(item):
    """16 bytes standing for ``item``: a JSON-able object, or a list of arrays (their bytes)."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, (list, tuple)) and item and all(hasattr(a, "dtype") for a in item):
        for a in item:
            array = np.ascontiguousarray(backend.to_numpy(a))
            h.update(f"{array.dtype}{array.shape}".encode())
            h.update(array.reshape(-1).view(np.uint8))
    else:
        h.update(json.dumps(item, sort_keys=True, default=_canonical).encode())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _canonical(value):
    return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else str(value)


def check_same_settings(**items):
    """Stop every rank at once if the ranks were started differently: each item (the run's
    arguments as a dict, its data or its weights as a list of arrays) is hashed on every rank and
    the hashes are compared (one Allgather). Raises :class:`CollectiveError` on every rank, naming
    the items and ranks that differ from rank 0's."""
    if world_size() == 1 or not items:
        return
    MPI, comm = _world
    mine = np.stack([_digest(item) for item in items.values()])  # (items, 16)
    every = np.empty((world_size(),) + mine.shape, dtype=np.uint8)
    comm.Allgather(mine, every)
    differ = {name: [r for r in range(1, world_size()) if not np.array_equal(every[r, i], every[0, i])]
              for i, name in enumerate(items)}
    differ = {name: ranks for name, ranks in differ.items() if ranks}
    if differ:
        what = "; ".join(f"{name} of rank{'s' * (len(r) > 1)} {', '.join(map(str, r))}" for name, r in differ.items())
        raise CollectiveError(f"the {world_size()} ranks were not started alike: {what} differ from rank 0's; "
                              f"start every rank with the same command, data and model files")


def fingerprint(model, samples=4096):
    """32 hex digits standing for a model's weights, cheaply: every parameter's name, shape, dtype and
    a strided sample of at most ``samples`` of its values (and a quantized weight's codes alike).
    The same files give the same digits on every rank; a different base almost surely does not, at
    the cost of reading a few thousand values per tensor, not the whole model."""
    h = hashlib.blake2b(digest_size=16)
    arrays = [(name, p.data) for name, p in model.named_parameters()]
    arrays += [(f"{name}.weight.codes", m.weight.codes) for name, m in model.named_modules()
               if hasattr(getattr(m, "weight", None), "codes")]
    for name, array in arrays:
        flat = array.reshape(-1)
        sample = np.ascontiguousarray(backend.to_numpy(flat[::max(1, flat.size // samples)]))
        h.update(f"{name}{array.dtype}{array.shape}".encode())
        h.update(sample.view(np.uint8))
    return h.hexdigest()


def _ranks_text(ranks):
    return f"rank{'s' * (len(ranks) > 1)} {', '.join(map(str, ranks))}"


def start_together(prepare, fingerprint_of=None):
    """``prepare()`` on every rank, then one agreement before anything is written: every rank sends
    (its error or None, ``fingerprint_of(prepared)``) in one allgather. If a rank failed to load or
    check its inputs, every rank raises :class:`CollectiveError` naming the ranks and their errors;
    if fingerprints differ (the same --base path holding other weights on another node), it names
    the ranks whose differ from rank 0's. So a rank that cannot start leaves --out as it was: no
    rank has touched it yet. In a single process: ``prepare()``, its errors as they are."""
    if world_size() == 1:
        return prepare()
    prepared, error, mark = None, None, None
    try:
        prepared = prepare()
        mark = fingerprint_of(prepared) if fingerprint_of else None
    except (ValueError, OSError, MemoryError, backend.BackendUnavailableError) as exc:
        error = " ".join(str(exc).split()) or type(exc).__name__
    every = _world[1].allgather((error, mark))
    errors = {}
    for r, (e, _) in enumerate(every):
        if e is not None:
            errors.setdefault(e, []).append(r)
    if errors:
        raise CollectiveError("; ".join(f"{_ranks_text(r)}: {e}" for e, r in errors.items())
                              + " (every rank stopped before writing anything)")
    differ = [r for r, (_, m) in enumerate(every) if m != every[0][1]]
    if differ:
        raise CollectiveError(f"the model weights loaded by {_ranks_text(differ)} differ from rank 0's (the same "
                              f"--base path holds other files on their nodes?); every rank must train the same "
                              f"model: copy the same files to every node")
    return prepared


def abort(code=1):
    """Stop every rank of the job with exit status ``code`` (MPI_Abort). A rank that fails alone
    must not exit normally: it would hang in MPI_Finalize and its peers in their next Allreduce.
    The launcher forwards a rank's output through a pipe, and the abort may kill that pipe's reader
    before it has read everything: a moment's pause lets the last lines through."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_SECONDS)
    MPI, comm = _world
    comm.Abort(code)


@contextlib.contextmanager
def stop_every_rank_on_error():
    """Around a rank's work: an exception that is not a :class:`CollectiveError` (which every
    rank raises together) prints its traceback, tagged with the rank, and aborts the whole job.
    In a single process it does nothing."""
    try:
        yield
    except CollectiveError:
        raise
    except BaseException as exc:
        if world_size() == 1:
            raise
        traceback.print_exc()
        print(f"lora_np: rank {rank()} of {world_size()} failed ({type(exc).__name__}: {exc}); stopping every rank",
              file=sys.stderr)
        abort(1)
