"""Optimizers against torch.optim over 12 steps (≤1e-6), state only for trainable parameters,
state dicts, global-norm clipping against torch, and the schedule against its closed form."""

import math

import numpy as np
import pytest
import torch

from lora_np import Parameter, Tensor, backend, parallel, to_numpy
from lora_np.optim import SGD, AdamW, WarmupCosine, clip_grad_norm_, cosine_with_warmup


def _problem(rng, dtype=np.float32):
    """Two parameters, a fixed least-squares loss, and the same in torch."""
    w0, b0 = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)
    x, y = rng.standard_normal((8, 4)).astype(dtype), rng.standard_normal((8, 3)).astype(dtype)
    ours = [Parameter(w0.copy()), Parameter(b0.copy())]
    theirs = [torch.tensor(w0.copy(), requires_grad=True), torch.tensor(b0.copy(), requires_grad=True)]

    def our_loss():
        d = Tensor(x) @ ours[0] + ours[1] - Tensor(y)
        return (d * d).mean()

    def their_loss():
        return ((torch.tensor(x) @ theirs[0] + theirs[1] - torch.tensor(y)) ** 2).mean()

    return ours, theirs, our_loss, their_loss


def _run(opt, loss_fn, params, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


@pytest.mark.parametrize("make_ours,make_theirs", [
    (lambda p: AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2)),
    (lambda p: AdamW(p, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     lambda p: torch.optim.AdamW(p, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
], ids=["adamw", "adamw-custom", "sgd", "sgd-momentum"])
def test_trajectory_equals_torch(make_ours, make_theirs, rng):
    ours, theirs, our_loss, their_loss = _problem(rng)
    _run(make_ours(ours), our_loss, ours, 12)
    _run(make_theirs(theirs), their_loss, theirs, 12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a), b.detach().numpy(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make_ours,make_theirs", [
    (lambda p: AdamW(p, lr=3e-2, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=3e-2, weight_decay=0.1)),
    (lambda p: SGD(p, lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
], ids=["adamw", "sgd-momentum"])
def test_updates_on_two_threads_in_blocks_equal_torch(make_ours, make_theirs, rng):
    """forced_threads splits each parameter into blocks on two threads; a transposed (non-contiguous)
    parameter is updated whole."""
    ours, theirs, our_loss, their_loss = _problem(rng)
    ours[0].data = backend.xp.asfortranarray(ours[0].data)
    assert not ours[0].data.flags.c_contiguous
    with parallel.forced_threads(2):
        _run(make_ours(ours), our_loss, ours, 12)
    _run(make_theirs(theirs), their_loss, theirs, 12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a), b.detach().numpy(), atol=1e-6, rtol=1e-6)


def test_small_parameters_updated_in_runs_equal_torch(rng):
    """Parameters under a block's size (parallel.GRAIN) are updated in runs of about a block, one task
    each (here a run of three, a last run of one), beside a big parameter's blocks, on two threads."""
    sizes = [(300, 250), (30000,), (7,), (30000,), (30000,), (5000,)]
    values = [rng.standard_normal(shape).astype(np.float32) for shape in sizes]
    grads = [[rng.standard_normal(shape).astype(np.float32) for shape in sizes] for _ in range(3)]
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    opt, topt = AdamW(ours, lr=1e-2, weight_decay=0.1), torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1)
    with parallel.forced_threads(2):
        for step_grads in grads:
            for p, q, g in zip(ours, theirs, step_grads):
                p.grad, q.grad = backend.xp.asarray(g.copy()), torch.tensor(g.copy())
            opt.step()
            topt.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a), b.detach().numpy(), atol=1e-6, rtol=1e-6)


def test_frozen_parameters_get_no_state(rng):
    ours, _, our_loss, _ = _problem(rng)
    ours[0].requires_grad = False
    opt = AdamW(ours, lr=1e-2)
    before = to_numpy(ours[0])
    _run(opt, our_loss, ours, 3)
    assert ours[0] not in opt.state and ours[1] in opt.state
    assert opt.state_bytes() == 2 * ours[1].data.nbytes
    np.testing.assert_array_equal(to_numpy(ours[0]), before)


def test_state_dict_resumes_the_same_trajectory(rng):
    ours, _, our_loss, _ = _problem(rng)
    opt = AdamW(ours, lr=1e-2)
    _run(opt, our_loss, ours, 3)
    saved_params = [to_numpy(p) for p in ours]
    saved = opt.state_dict()
    _run(opt, our_loss, ours, 4)
    want = [to_numpy(p) for p in ours]
    for p, v in zip(ours, saved_params):
        p.data = p.data.copy()
        p.data[...] = backend.asarray(v)
    fresh = AdamW(ours, lr=1e-2)
    fresh.load_state_dict(saved)
    _run(fresh, our_loss, ours, 4)
    for p, w in zip(ours, want):
        np.testing.assert_array_equal(to_numpy(p), w)


def test_load_state_dict_checks_shapes(rng):
    ours, _, our_loss, _ = _problem(rng)
    opt = AdamW(ours)
    _run(opt, our_loss, ours, 1)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"exp_avg.*\(2, 2\).*\(4, 3\)"):
        AdamW(ours).load_state_dict(sd)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_equals_torch(max_norm, rng):
    ours, theirs, our_loss, their_loss = _problem(rng)
    our_loss().backward()
    their_loss().backward()
    norm = clip_grad_norm_(ours, max_norm)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    np.testing.assert_allclose(float(norm), ref.item(), rtol=1e-6)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a.grad), b.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_schedule_closed_form():
    assert cosine_with_warmup(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert cosine_with_warmup(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_with_warmup(0, 1.0, 20, 10)


def test_warmup_cosine_drives_the_optimizer(rng):
    ours, _, _, _ = _problem(rng)
    opt = AdamW(ours, lr=2.0)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = [opt.param_groups[0]["lr"]] + [sched.step() for _ in range(25)]
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[-1] == pytest.approx(0.2)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[3:], lrs[4:]))


@pytest.mark.parametrize("kwargs,match", [(dict(lr=0), "lr"), (dict(lr=-1), "lr"), (dict(betas=(1.0, 0.9)), "betas"),
                                          (dict(eps=0), "eps"), (dict(weight_decay=-0.1), "weight_decay")])
def test_bad_hyper_parameters(kwargs, match, rng):
    ours, _, _, _ = _problem(rng)
    with pytest.raises(ValueError, match=match):
        AdamW(ours, **kwargs)


def test_empty_or_non_float_parameters():
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="floating"):
        SGD([Tensor(np.array([1, 2]))], lr=0.1)
