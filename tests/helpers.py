"""Small shared helpers for the tests (test data, not library code)."""

import numpy as np

from lora_np import Tensor, to_numpy
from lora_np.app.cli import main


def leaf(rng, *shape, positive=False, dtype=np.float64):
    """A float64 leaf tensor that requires grad, with standard-normal (or positive) entries."""
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return Tensor(data.astype(dtype), requires_grad=True)


def torch_leaf(t):
    """The same values as a float64/float32 torch tensor that requires grad (oracle side)."""
    import torch
    return torch.tensor(to_numpy(t), requires_grad=True)


def assert_close(ours, theirs, rtol=1e-10, atol=1e-12):
    """Compare a lora_np Tensor/array with a torch tensor or NumPy array."""
    if hasattr(theirs, "detach"):
        theirs = theirs.detach().numpy()
    np.testing.assert_allclose(to_numpy(ours), theirs, rtol=rtol, atol=atol)


def cli(capsys, *args):
    """(exit code, stdout, stderr) of the command line run in this process; an argparse exit gives its code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
