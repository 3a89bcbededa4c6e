"""Every exercise in the notebooks can fail, and is asked before it is answered.

An exercise is a solution cell (tagged "solution", source hidden) defining a function that has a
check in notebooks/course/, with a stub cell (``# YOUR CODE``) defining the same name. For each:

- its check rejects the stub, accepts the notebook's solution, and rejects every plausible wrong
  answer listed below in ``MISTAKES`` (at least three per exercise: a transpose, a wrong axis, a
  missing term or scale, a numerically unstable form, a wrong dtype assumption, a string shortcut
  — the mistakes learners make, not a scaled copy of the answer);
- no visible cell before its stub gives the answer away: the key expressions of the solution
  (its ``return`` lines, and the formulas in ``KEYS``) appear only in collapsed cells or after it.
"""

import ast
import math
import re
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

import lora_np
from lora_np import Tensor, ops

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOK_DIR))
import course  # noqa: E402  (notebooks/course, the notebooks' exercise checks)


def _defined_functions(source):
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a cell with IPython magics holds no exercise
        return []
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]


def _hidden(cell):
    return bool(cell.metadata.get("jupyter", {}).get("source_hidden"))


def _exercises():
    """(notebook, name, stub source, solution cell, earlier solution sources, visible text before the stub)."""
    found = []
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        stubs, earlier, visible = {}, [], []
        for cell in nbformat.read(path, as_version=4).cells:
            names = _defined_functions(cell.source) if cell.cell_type == "code" else []
            if cell.cell_type == "code" and "# YOUR CODE" in cell.source:
                stubs.update((name, (cell.source, "\n".join(visible))) for name in names)
            elif cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
                for name in names:
                    if name in course.CHECKS:
                        stub, before = stubs.get(name, (None, ""))
                        found.append((path.stem, name, stub, cell, list(earlier), before))
                earlier.append(cell.source)
            if not _hidden(cell):
                visible.append(cell.source)
    return found


EXERCISES = _exercises()
IDS = [f"{e[0][:2]}-{e[1]}" for e in EXERCISES]


def _namespace():
    return {"np": np, "math": math, "time": time, "lora_np": lora_np, "ops": ops, "Tensor": Tensor,
            "check": course.check}


def _define(source, name, earlier=()):
    """``name`` as the cell defines it, with the notebook's earlier solutions in scope (a block's
    backward calls the layer norm, attention and GELU backward passes written before it)."""
    namespace = _namespace()
    for cell in earlier:
        exec(compile(cell.replace("assert check(", "(lambda f: f)("), "<earlier>", "exec"), namespace)
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


# ---------------------------------------------------------------- plausible wrong answers, by exercise
MISTAKES = {}


def mistake(exercise, what):
    """Register ``fn`` as a wrong answer to ``exercise`` (renamed so that check() finds its exercise)."""
    def register(fn):
        fn.__name__ = exercise
        fn.what = what
        MISTAKES.setdefault(exercise, []).append(fn)
        return fn
    return register


# 01 · autograd
@mistake("topological_order", "outputs first (the order backward walks, not the order it needs)")
def _(root):
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            order.append(node)
            for parent in node.parents:
                if parent is not None:
                    visit(parent)
    visit(root)
    return order


@mistake("topological_order", "no 'seen' set: a node used twice is listed twice")
def _(root):
    order = []

    def visit(node):
        for parent in node.parents:
            if parent is not None:
                visit(parent)
        order.append(node)
    visit(root)
    return order


@mistake("topological_order", "the leaves left out (only nodes with inputs)")
def _(root):
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            for parent in node.parents:
                if parent is not None:
                    visit(parent)
            if any(p is not None for p in node.parents):
                order.append(node)
    visit(root)
    return order


@mistake("topological_order", "the engine's own private sort called")
def _(root):
    from lora_np.autograd import _topological_order
    return _topological_order(root)


@mistake("mul_backward", "db not summed over the broadcast axis")
def _(g, a, b):
    return g * b, g * a


@mistake("mul_backward", "db summed over the wrong axis")
def _(g, a, b):
    return g * b, (g * a).sum(axis=1)


@mistake("mul_backward", "da and db swapped (each input's own value instead of the other's)")
def _(g, a, b):
    return g * a, (g * b).sum(axis=0)


@mistake("matmul_backward", "db transposed: Gᵀ A")
def _(g, a, b):
    return g @ b.T, g.T @ a


@mistake("matmul_backward", "the mean over rows instead of the sum")
def _(g, a, b):
    return g @ b.T, a.T @ g / len(g)


@mistake("matmul_backward", "da with B instead of Bᵀ, shapes forced by reshape")
def _(g, a, b):
    return (g @ b.reshape(2, 4)), a.T @ g


@mistake("softmax_backward", "the ⟨g, y⟩ term missing: y ⊙ g")
def _(g, y):
    return y * g


@mistake("softmax_backward", "⟨g, y⟩ summed over the wrong axis")
def _(g, y):
    return y * (g - (g * y).sum(axis=0, keepdims=True))


@mistake("softmax_backward", "the Jacobian's diagonal only: y(1 - y) ⊙ g")
def _(g, y):
    return y * (1 - y) * g


@mistake("cross_entropy_backward", "no max shift: e^z overflows for large logits")
def _(logits, targets):
    p = np.exp(logits)
    p = p / p.sum(axis=1, keepdims=True)
    p[np.arange(len(targets)), targets] -= 1.0
    return p / len(targets)


@mistake("cross_entropy_backward", "the sum, not the mean: no 1/N")
def _(logits, targets):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = p / p.sum(axis=1, keepdims=True)
    p[np.arange(len(targets)), targets] -= 1.0
    return p


@mistake("cross_entropy_backward", "softmax over the wrong axis (the batch)")
def _(logits, targets):
    p = np.exp(logits - logits.max(axis=0, keepdims=True))
    p = p / p.sum(axis=0, keepdims=True)
    p[np.arange(len(targets)), targets] -= 1.0
    return p / len(targets)


# 02 · the transformer
def _ln_parts(x, w, eps=1e-5, ddof=0):
    r = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True, ddof=ddof) + eps)
    return r, (x - x.mean(axis=-1, keepdims=True)) * r


@mistake("layer_norm_backward", "the mean term missing (μ treated as a constant)")
def _(g, x, w):
    r, xhat = _ln_parts(x, w)
    d = g * w
    return r * (d - xhat * (d * xhat).mean(axis=-1, keepdims=True)), (g * xhat).sum(0), g.sum(0)


@mistake("layer_norm_backward", "the variance term missing (σ treated as a constant)")
def _(g, x, w):
    r, xhat = _ln_parts(x, w)
    d = g * w
    return r * (d - d.mean(axis=-1, keepdims=True)), (g * xhat).sum(0), g.sum(0)


@mistake("layer_norm_backward", "the unbiased variance (ddof=1), not layer norm's")
def _(g, x, w):
    r, xhat = _ln_parts(x, w, ddof=1)
    d = g * w
    return r * (d - d.mean(axis=-1, keepdims=True) - xhat * (d * xhat).mean(axis=-1, keepdims=True)), \
        (g * xhat).sum(0), g.sum(0)


@mistake("layer_norm_backward", "dw summed over the wrong axis")
def _(g, x, w):
    r, xhat = _ln_parts(x, w)
    d = g * w
    return r * (d - d.mean(axis=-1, keepdims=True) - xhat * (d * xhat).mean(axis=-1, keepdims=True)), \
        (g * xhat).sum(1), g.sum(0)


def _gelu_parts(x):
    c = np.sqrt(2 / np.pi)
    return c, np.tanh(c * (x + 0.044715 * x ** 3))


@mistake("gelu_backward", "the product rule's second term missing")
def _(g, x):
    c, t = _gelu_parts(x)
    return g * 0.5 * (1 + t)


@mistake("gelu_backward", "the inner derivative without its 3: 1 + 0.044715 x²")
def _(g, x):
    c, t = _gelu_parts(x)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 0.044715 * x ** 2))


@mistake("gelu_backward", "the √(2/π) factor dropped")
def _(g, x):
    c, t = _gelu_parts(x)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * (1 + 3 * 0.044715 * x ** 2))


def _attention(q, k, v, scale=True, causal=True):
    T, d = q.shape
    s = q @ k.T / (np.sqrt(d) if scale else 1.0)
    if causal:
        s = s + np.triu(np.full((T, T), -np.inf), k=1)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


@mistake("attention_backward", "the 1/√d scale missing from dq and dk")
def _(g, q, k, v):
    p = _attention(q, k, v)
    dp = g @ v.T
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return ds @ k, ds.T @ q, p.T @ g


@mistake("attention_backward", "softmax's backward without the row sum: dS = P ⊙ dP")
def _(g, q, k, v):
    p, d = _attention(q, k, v), q.shape[1]
    ds = p * (g @ v.T)
    return ds @ k / np.sqrt(d), ds.T @ q / np.sqrt(d), p.T @ g


@mistake("attention_backward", "dv without the transpose: P G")
def _(g, q, k, v):
    p, d = _attention(q, k, v), q.shape[1]
    dp = g @ v.T
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return ds @ k / np.sqrt(d), ds.T @ q / np.sqrt(d), p @ g


@mistake("attention_backward", "the causal mask forgotten in the recomputed P")
def _(g, q, k, v):
    p, d = _attention(q, k, v, causal=False), q.shape[1]
    dp = g @ v.T
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return ds @ k / np.sqrt(d), ds.T @ q / np.sqrt(d), p.T @ g


def _block_backward(g, cache, p, residual=True, strided_heads=False, ln_input="x1", n_head=2):
    """A whole block's backward with one switch per mistake (the right answer with the defaults)."""
    def ln_back(g, x, w):
        r, xhat = _ln_parts(x, w)
        d = g * w
        return (r * (d - d.mean(-1, keepdims=True) - xhat * (d * xhat).mean(-1, keepdims=True)),
                (g * xhat).sum(0), g.sum(0))

    def att_back(g, q, k, v):
        P, dh = _attention(q, k, v), q.shape[1]
        dp = g @ v.T
        ds = P * (dp - (dp * P).sum(axis=-1, keepdims=True))
        return ds @ k / np.sqrt(dh), ds.T @ q / np.sqrt(dh), P.T @ g

    def gelu_back(g, x):
        c, t = _gelu_parts(x)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2))

    d = {"mlp.c_proj.weight": cache["u"].T @ g, "mlp.c_proj.bias": g.sum(0), "u": g @ p["mlp.c_proj.weight"].T}
    d["f"] = gelu_back(d["u"], cache["f"])
    d["mlp.c_fc.weight"], d["mlp.c_fc.bias"] = cache["h2"].T @ d["f"], d["f"].sum(0)
    d["h2"] = d["f"] @ p["mlp.c_fc.weight"].T
    dx1, d["ln_2.weight"], d["ln_2.bias"] = ln_back(d["h2"], cache[ln_input], p["ln_2.weight"])
    d["x1"] = g + dx1 if residual else dx1
    d["attn.c_proj.weight"], d["attn.c_proj.bias"] = cache["att"].T @ d["x1"], d["x1"].sum(0)
    d["att"] = d["x1"] @ p["attn.c_proj.weight"].T
    q, k, v = np.split(cache["qkv"], 3, axis=1)
    hd = q.shape[1] // n_head
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for i in range(n_head):
        cols = slice(i, None, n_head) if strided_heads else slice(i * hd, (i + 1) * hd)
        dq[:, cols], dk[:, cols], dv[:, cols] = att_back(d["att"][:, cols], q[:, cols], k[:, cols], v[:, cols])
    d["qkv"] = np.concatenate([dq, dk, dv], axis=1)
    d["attn.c_attn.weight"], d["attn.c_attn.bias"] = cache["h1"].T @ d["qkv"], d["qkv"].sum(0)
    d["h1"] = d["qkv"] @ p["attn.c_attn.weight"].T
    dx, d["ln_1.weight"], d["ln_1.bias"] = ln_back(d["h1"], cache["x"], p["ln_1.weight"])
    d["x"] = d["x1"] + dx if residual else dx
    return d


mistake("block_backward", "the residual connections' gradients dropped")(
    lambda g, cache, p: _block_backward(g, cache, p, residual=False))
mistake("block_backward", "heads taken as every H-th channel, not contiguous slices")(
    lambda g, cache, p: _block_backward(g, cache, p, strided_heads=True))
mistake("block_backward", "ln_2's backward evaluated at its output h2 instead of its input x1")(
    lambda g, cache, p: _block_backward(g, cache, p, ln_input="h2"))


@mistake("embedding_backward", "dW[ids] += g: fancy-index += keeps one of the repeated tokens' rows")
def _(g, ids, V):
    dW = np.zeros((V, g.shape[-1]))
    dW[ids.reshape(-1)] += g.reshape(-1, g.shape[-1])
    return dW


@mistake("embedding_backward", "each token's rows averaged, not summed")
def _(g, ids, V):
    dW = np.zeros((V, g.shape[-1]))
    np.add.at(dW, ids.reshape(-1), g.reshape(-1, g.shape[-1]))
    return dW / np.maximum(np.bincount(ids.reshape(-1), minlength=V), 1)[:, None]


@mistake("embedding_backward", "only the first sequence of the batch")
def _(g, ids, V):
    dW = np.zeros((V, g.shape[-1]))
    np.add.at(dW, ids[0], g[0])
    return dW


def _ln_steps_backward(g, c, w, eps=1e-5, both_paths=True, mean=True, mu_path=True):
    """Layer norm's atomic backward with one switch per mistake (the right answer with the defaults)."""
    C = c["x"].shape[-1]
    d = {"w": (g * c["xhat"]).sum(axis=0), "b": g.sum(axis=0), "xhat": g * w}
    d["rstd"] = (d["xhat"] * c["xc"]).sum(axis=-1, keepdims=True)
    d["var"] = -0.5 * (c["var"] + eps) ** -1.5 * d["rstd"]
    d["xc2"] = np.ones_like(c["xc2"]) * d["var"] / (C if mean else 1)
    d["xc"] = d["xhat"] * c["rstd"] + (2 * c["xc"] * d["xc2"] if both_paths else 0)
    d["mu"] = -d["xc"].sum(axis=-1, keepdims=True)
    d["x"] = d["xc"] + (d["mu"] / C if mu_path else 0)
    return d


mistake("layer_norm_steps_backward", "xc feeds xhat and xc2: the xc2 path's gradient not added")(
    lambda g, c, w: _ln_steps_backward(g, c, w, both_paths=False))
mistake("layer_norm_steps_backward", "the variance's mean backpropagated as a sum (no 1/C)")(
    lambda g, c, w: _ln_steps_backward(g, c, w, mean=False))
mistake("layer_norm_steps_backward", "dx without the path through the mean")(
    lambda g, c, w: _ln_steps_backward(g, c, w, mu_path=False))


def _attention_steps_backward(g, c, merge="heads_then_time", scale=True, rowsum=True):
    """Attention's atomic backward with one switch per mistake (the right answer with the defaults)."""
    H, T, hd = c["q"].shape
    grads = {"out": g.reshape(T, H, hd).transpose(1, 0, 2) if merge == "heads_then_time" else g.reshape(H, T, hd)}
    grads["probs"] = grads["out"] @ c["v"].swapaxes(-1, -2)
    grads["v"] = c["probs"].swapaxes(-1, -2) @ grads["out"]
    p = c["probs"]
    grads["masked"] = p * (grads["probs"] - ((grads["probs"] * p).sum(axis=-1, keepdims=True) if rowsum else 0))
    grads["scaled"] = grads["masked"]
    grads["scores"] = grads["scaled"] / (np.sqrt(hd) if scale else 1.0)
    grads["q"] = grads["scores"] @ c["k"]
    grads["k"] = grads["scores"].swapaxes(-1, -2) @ c["q"]
    return grads


mistake("attention_steps_backward", "the merge undone by g.reshape(H, T, d): heads and time mixed up")(
    lambda g, c: _attention_steps_backward(g, c, merge="reshape"))
mistake("attention_steps_backward", "the 1/√d scale not applied on the way back")(
    lambda g, c: _attention_steps_backward(g, c, scale=False))
mistake("attention_steps_backward", "softmax's backward without the row sum")(
    lambda g, c: _attention_steps_backward(g, c, rowsum=False))


# 03 · LoRA's mathematics
@mistake("lora_forward", "the scale s forgotten")
def _(x, W, b, A, B, s, keep):
    return x @ W + b + ((x * keep) @ A.T) @ B.T


@mistake("lora_forward", "dropout applied to the frozen path too")
def _(x, W, b, A, B, s, keep):
    return (x * keep) @ W + b + s * ((x * keep) @ A.T) @ B.T


@mistake("lora_forward", "the paper's layout used as is: x (B A)")
def _(x, W, b, A, B, s, keep):
    return x @ W + b + s * (x * keep) @ (B @ A)


def _inject(model, target_modules, make_adapter, match="peft", freeze=True, assign=True, freeze_adapters=False):
    from lora_np.nn import Linear
    modules = dict(model.named_modules())
    for name, module in list(modules.items()):
        hit = {"peft": any(name == t or name.endswith("." + t) for t in target_modules),
               "last": name.rsplit(".", 1)[-1] in target_modules,
               "substring": any(t in name for t in target_modules),
               "endswith": name.endswith(tuple(target_modules))}[match]
        if isinstance(module, Linear) and hit:
            parent, _, attr = name.rpartition(".")
            if assign:
                setattr(modules[parent], attr, make_adapter(module))
            else:
                module = make_adapter(module)         # rebinds a local name; the model never sees it
    for name, p in model.named_parameters():
        if freeze_adapters:
            p.requires_grad = False
        elif freeze:
            p.requires_grad = name.endswith(("lora_A", "lora_B"))


mistake("inject_lora", "matching the last name component only ('attn.c_proj' then matches nothing)")(
    lambda model, t, make: _inject(model, t, make, match="last"))
mistake("inject_lora", "substring matching: 'fc' in the name (PEFT wants the whole name or a '.'-tail)")(
    lambda model, t, make: _inject(model, t, make, match="substring"))
mistake("inject_lora", "name.endswith(target) without the '.': 'fc' matches 'c_fc'")(
    lambda model, t, make: _inject(model, t, make, match="endswith"))
mistake("inject_lora", "the base left trainable")(lambda model, t, make: _inject(model, t, make, freeze=False))
mistake("inject_lora", "the wrapper bound to a local variable, not set on the parent module")(
    lambda model, t, make: _inject(model, t, make, assign=False))
mistake("inject_lora", "everything frozen, the adapters too")(
    lambda model, t, make: _inject(model, t, make, freeze_adapters=True))


@mistake("lora_backward", "the scale s missing from dA")
def _(g, x, W, A, B, s):
    h = x @ A.T
    return g @ W.T + s * (g @ B) @ A, (g @ B).T @ x, s * g.T @ h


@mistake("lora_backward", "dx through the frozen weight only")
def _(g, x, W, A, B, s):
    h, dh = x @ A.T, s * g @ B
    return g @ W.T, dh.T @ x, s * g.T @ h


@mistake("lora_backward", "dB transposed: s Hᵀ G")
def _(g, x, W, A, B, s):
    h, dh = x @ A.T, s * g @ B
    return g @ W.T + dh @ A, dh.T @ x, s * h.T @ g


@mistake("merge", "the scale s forgotten")
def _(W, A, B, s):
    return W + A.T @ B.T


@mistake("merge", "subtracted (unmerge) instead of added")
def _(W, A, B, s):
    return W - s * A.T @ B.T


@mistake("merge", "divided by r again: s is α/r already")
def _(W, A, B, s):
    return W + s / A.shape[0] * A.T @ B.T


# 04 · LoRA vs full fine-tuning
@mistake("mark_only_lora_as_trainable", "everything frozen, the adapters too")
def _(model):
    for p in model.parameters():
        p.requires_grad = False


@mistake("mark_only_lora_as_trainable", "only the adapters switched on; the base never switched off")
def _(model):
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad = True


@mistake("mark_only_lora_as_trainable", "only A trainable (B frozen at zero: the adapter never moves)")
def _(model):
    for name, p in model.named_parameters():
        p.requires_grad = "lora_A" in name


@mistake("adamw_state_bytes", "4 bytes per number assumed (a float64 model has 8)")
def _(model):
    return sum(2 * p.size * 4 for p in model.parameters() if p.requires_grad)


@mistake("adamw_state_bytes", "one moment instead of two")
def _(model):
    return sum(p.size * p.dtype.itemsize for p in model.parameters() if p.requires_grad)


@mistake("adamw_state_bytes", "every parameter counted, the frozen ones too")
def _(model):
    return sum(2 * p.size * p.dtype.itemsize for p in model.parameters())


@mistake("adamw_state_bytes", "the adapters counted by name, a trained bias missed")
def _(model):
    return sum(2 * p.size * p.dtype.itemsize for n, p in model.named_parameters() if "lora_" in n)


# 05 · GPUs
@mistake("timed", "no synchronize at all")
def _(fn, synchronize):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@mistake("timed", "synchronize only after: earlier queued work is timed too")
def _(fn, synchronize):
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


@mistake("timed", "synchronize only before: the clock stops at the launch")
def _(fn, synchronize):
    synchronize()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@mistake("timed", "milliseconds returned for seconds")
def _(fn, synchronize):
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return 1000 * (time.perf_counter() - start)


# 06 · variants
def _dora_parts(g, x, W, A, B, m, s):
    v = W + s * A.T @ B.T
    return np.sqrt((v * v).sum(axis=0)), x @ A.T


@mistake("dora_backward", "dm without dividing by the norm")
def _(g, x, W, A, B, m, s):
    n, h = _dora_parts(g, x, W, A, B, m, s)
    gc = g * (m / n)
    return (s * gc @ B).T @ x, s * gc.T @ h, (g * (x @ W + s * h @ B.T)).sum(axis=0)


@mistake("dora_backward", "dA and dB without the m/n factor (plain LoRA's)")
def _(g, x, W, A, B, m, s):
    n, h = _dora_parts(g, x, W, A, B, m, s)
    return (s * g @ B).T @ x, s * g.T @ h, (g * (x @ W + s * h @ B.T)).sum(axis=0) / n


@mistake("dora_backward", "the norm taken over the wrong axis (per input row)")
def _(g, x, W, A, B, m, s):
    v = W + s * A.T @ B.T
    n, h = np.sqrt((v * v).sum(axis=1))[:W.shape[1]], x @ A.T
    gc = g * (m / n)
    return (s * gc @ B).T @ x, s * gc.T @ h, (g * (x @ W + s * h @ B.T)).sum(axis=0) / n


@mistake("matched_lr", "lr·α kept constant for SGD too (SGD's step grows with s², not s)")
def _(lr, alpha, new_alpha, optimizer):
    return lr * alpha / new_alpha


@mistake("matched_lr", "the ratio inverted")
def _(lr, alpha, new_alpha, optimizer):
    return lr * new_alpha / alpha if optimizer == "adam" else lr * (new_alpha / alpha) ** 2


@mistake("matched_lr", "the square for Adam too")
def _(lr, alpha, new_alpha, optimizer):
    return lr * (alpha / new_alpha) ** 2


@mistake("matched_lr", "nothing to change: α is not a learning rate")
def _(lr, alpha, new_alpha, optimizer):
    return lr


# 07 · QLoRA
def _nf4_codes(w, side="left", reciprocal=True, absmax_fn=lambda w: np.abs(w).max()):
    from lora_np.quant import NF4_CODE
    absmax = absmax_fn(w)
    scaled = w * (np.float32(1) / absmax) if reciprocal else w / absmax
    midpoints = (NF4_CODE[:-1] + NF4_CODE[1:]) / np.float32(2)
    return np.searchsorted(midpoints, scaled, side=side), absmax


mistake("nf4_quantize_block", "a value on a midpoint rounded up")(lambda w: _nf4_codes(w, side="right"))
mistake("nf4_quantize_block", "w / absmax, not w · (1/absmax) in float32 as bitsandbytes")(
    lambda w: _nf4_codes(w, reciprocal=False))
mistake("nf4_quantize_block", "absmax = max(w), not max|w|")(lambda w: _nf4_codes(w, absmax_fn=np.max))
mistake("nf4_quantize_block", "nearest level by |x - level| with argmin, without the float32 midpoints")(
    lambda w: (np.abs((w / np.abs(w).max())[:, None].astype(np.float64)
                      - __import__("lora_np").quant.NF4_CODE[None, :]).argmin(axis=1), np.abs(w).max()))


@mistake("merge_qlora", "merged into the original float weight, which the adapter never saw")
def _(W_float, qweight, A, B, s):
    return (W_float + s * A.T @ B.T).astype(np.float32)


@mistake("merge_qlora", "merged, then quantized back to NF4 (the update drowns in the rounding)")
def _(W_float, qweight, A, B, s):
    from lora_np.quant import QuantWeight
    merged = (np.asarray(qweight.dequantize()) + s * A.T @ B.T).astype(np.float32)
    return np.asarray(QuantWeight.from_float(merged, "nf4").dequantize())


@mistake("merge_qlora", "the scale s forgotten")
def _(W_float, qweight, A, B, s):
    return (np.asarray(qweight.dequantize()) + A.T @ B.T).astype(np.float32)


@mistake("merge_qlora", "float64 returned: the scale as a Python float promotes the product")
def _(W_float, qweight, A, B, s):
    return np.asarray(qweight.dequantize()).astype(np.float64) + s * A.T.astype(np.float64) @ B.T


# 08 · BPE
@mistake("merge_pair", "only the first occurrence merged")
def _(symbols, pair):
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == tuple(pair):
            return symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return list(symbols)


@mistake("merge_pair", "a string shortcut: join with spaces, replace, split")
def _(symbols, pair):
    return " ".join(symbols).replace(f"{pair[0]} {pair[1]}", pair[0] + pair[1]).split(" ")


@mistake("merge_pair", "scanning right to left (overlaps resolved from the wrong end)")
def _(symbols, pair):
    out, i = [], len(symbols) - 1
    while i >= 0:
        if i > 0 and (symbols[i - 1], symbols[i]) == tuple(pair):
            out.insert(0, symbols[i - 1] + symbols[i])
            i -= 2
        else:
            out.insert(0, symbols[i])
            i -= 1
    return out


@mistake("merge_pair", "only the left symbol compared")
def _(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0]:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


# 09 · from GPT-2 to Llama
def _rms_parts(x, eps=1e-6):
    r = 1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return r, x * r


@mistake("rms_norm_backward", "the projection term missing: r · g ⊙ w")
def _(g, x, w):
    r, xhat = _rms_parts(x)
    return r * g * w, (g * xhat).sum(axis=0)


@mistake("rms_norm_backward", "layer norm's backward copied: the mean of g ⊙ w subtracted too")
def _(g, x, w):
    r, xhat = _rms_parts(x)
    d = g * w
    return r * (d - d.mean(-1, keepdims=True) - xhat * (d * xhat).mean(-1, keepdims=True)), (g * xhat).sum(axis=0)


@mistake("rms_norm_backward", "the mean over the wrong axis (the rows)")
def _(g, x, w):
    r, xhat = _rms_parts(x)
    d = g * w
    return r * (d - xhat * (d * xhat).mean(axis=0, keepdims=True)), (g * xhat).sum(axis=0)


def _halves(cos, sin):
    return np.concatenate([cos, cos], axis=-1), np.concatenate([sin, sin], axis=-1)


def _rotate_half(x, sign=1):
    h = x.shape[-1] // 2
    return np.concatenate([-sign * x[..., h:], sign * x[..., :h]], axis=-1)


@mistake("rope", "neighbours paired (x0, x1), (x2, x3), ... (GPT-J's convention), not halves")
def _(x, cos, sin):
    y = np.empty_like(x)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    y[..., 0::2], y[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    return y


@mistake("rope", "the wrong half rotated: rotate_half = [x₂, -x₁] (a turn by -θ)")
def _(x, cos, sin):
    c, s = _halves(cos, sin)
    return x * c + _rotate_half(x, sign=-1) * s


@mistake("rope", "cos and sin tiled per pair instead of repeated per half")
def _(x, cos, sin):
    c, s = np.repeat(cos, 2, axis=-1), np.repeat(sin, 2, axis=-1)
    return x * c + _rotate_half(x) * s


@mistake("rope_backward", "the inverse rotation forgotten: the forward applied to g")
def _(g, cos, sin):
    c, s = _halves(cos, sin)
    return g * c + _rotate_half(g) * s


@mistake("rope_backward", "only the cos part: g ⊙ cos")
def _(g, cos, sin):
    return g * _halves(cos, sin)[0]


@mistake("rope_backward", "neighbours paired (GPT-J's convention) in the inverse rotation")
def _(g, cos, sin):
    dx = np.empty_like(g)
    g1, g2 = g[..., 0::2], g[..., 1::2]
    dx[..., 0::2], dx[..., 1::2] = g1 * cos + g2 * sin, g2 * cos - g1 * sin
    return dx


@mistake("swiglu_backward", "SiLU's derivative without its second term: σ(a) only")
def _(g, a, b):
    sig = 1 / (1 + np.exp(-a))
    return g * b * sig, g * a * sig


@mistake("swiglu_backward", "the sigmoid's derivative σ(1 - σ) for SiLU's")
def _(g, a, b):
    sig = 1 / (1 + np.exp(-a))
    return g * b * sig * (1 - sig), g * a * sig


@mistake("swiglu_backward", "db as g ⊙ a: the gate's activation forgotten")
def _(g, a, b):
    sig = 1 / (1 + np.exp(-a))
    return g * b * sig * (1 + a * (1 - sig)), g * a


@mistake("gqa_kv_backward", "the mean over the group, not the sum")
def _(g, n_kv):
    return g.reshape(n_kv, -1, *g.shape[1:]).mean(axis=1)


@mistake("gqa_kv_backward", "groups taken as every H_kv-th head (interleaved), not consecutive heads")
def _(g, n_kv):
    return g.reshape(-1, n_kv, *g.shape[1:]).sum(axis=0)


@mistake("gqa_kv_backward", "the first query head of each group only")
def _(g, n_kv):
    return g[::g.shape[0] // n_kv]


def _att_back(g, q, k, v):
    P, hd = _attention(q, k, v), q.shape[1]
    dp = g @ v.T
    ds = P * (dp - (dp * P).sum(axis=-1, keepdims=True))
    return ds @ k / np.sqrt(hd), ds.T @ q / np.sqrt(hd), P.T @ g


def _rms_back(g, x, w):
    r, xhat = _rms_parts(x)
    d = g * w
    return r * (d - xhat * (d * xhat).mean(-1, keepdims=True)), (g * xhat).sum(axis=0)


def _llama_layer_backward(g, c, p, cos, sin, residual=True, unrotate=True, group_sum=True, n_head=4, n_kv=2):
    """A whole Llama layer's backward with one switch per mistake (the right answer with the defaults)."""
    T, hd, G = c["x"].shape[0], c["q"].shape[-1], n_head // n_kv
    ch, sh = _halves(cos, sin)
    sig = 1 / (1 + np.exp(-c["a"]))
    d = {"mlp.down_proj.weight": g.T @ c["m"], "m": g @ p["mlp.down_proj.weight"]}
    d["a"], d["b"] = d["m"] * c["b"] * sig * (1 + c["a"] * (1 - sig)), d["m"] * c["a"] * sig
    d["mlp.gate_proj.weight"], d["mlp.up_proj.weight"] = d["a"].T @ c["h2"], d["b"].T @ c["h2"]
    d["h2"] = d["a"] @ p["mlp.gate_proj.weight"] + d["b"] @ p["mlp.up_proj.weight"]
    dx1, d["post_attention_layernorm.weight"] = _rms_back(d["h2"], c["x1"], p["post_attention_layernorm.weight"])
    d["x1"] = g + dx1 if residual else dx1
    d["self_attn.o_proj.weight"], d["att"] = d["x1"].T @ c["att"], d["x1"] @ p["self_attn.o_proj.weight"]
    dq, dk, dv = (np.zeros((n_head, T, hd)) for _ in range(3))
    for h in range(n_head):
        dq[h], dk[h], dv[h] = _att_back(d["att"][:, h * hd:(h + 1) * hd], c["q_rot"][h], c["k_rot"][h // G],
                                        c["v"][h // G])
    reduce = (lambda t: t.reshape(n_kv, G, T, hd).sum(axis=1)) if group_sum else \
        (lambda t: t.reshape(n_kv, G, T, hd).mean(axis=1))
    d["q_rot"], d["k_rot"], d["v"] = dq, reduce(dk), reduce(dv)
    d["q"], d["k"] = ((t * ch - _rotate_half(t * sh)) if unrotate else t for t in (d["q_rot"], d["k_rot"]))
    d["h1"] = 0
    for n in "qkv":
        flat = d[n].transpose(1, 0, 2).reshape(T, -1)
        d[f"self_attn.{n}_proj.weight"] = flat.T @ c["h1"]
        d["h1"] = d["h1"] + flat @ p[f"self_attn.{n}_proj.weight"]
    dx, d["input_layernorm.weight"] = _rms_back(d["h1"], c["x"], p["input_layernorm.weight"])
    d["x"] = d["x1"] + dx if residual else dx
    return d


mistake("llama_layer_backward", "the residual connections' gradients dropped")(
    lambda g, c, p, cos, sin: _llama_layer_backward(g, c, p, cos, sin, residual=False))
mistake("llama_layer_backward", "q and k's gradients not rotated back (RoPE's backward skipped)")(
    lambda g, c, p, cos, sin: _llama_layer_backward(g, c, p, cos, sin, unrotate=False))
mistake("llama_layer_backward", "each K/V head's gradient averaged over its query heads, not summed")(
    lambda g, c, p, cos, sin: _llama_layer_backward(g, c, p, cos, sin, group_sum=False))



# 10 · from Llama to Gemma 3
def _gemma_rms_back(g, x, w, eps=1e-6, scale=lambda w: 1 + w, rows=lambda t, C: t.reshape(-1, C).sum(axis=0)):
    r = 1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    xhat, d = x * r, g * scale(w)
    return r * (d - xhat * (d * xhat).mean(axis=-1, keepdims=True)), rows(g * xhat, x.shape[-1])


mistake("gemma_rms_norm_backward", "Llama's backward copied: g ⊙ w where g ⊙ (1 + w) belongs")(
    lambda g, x, w: _gemma_rms_back(g, x, w, scale=lambda w: w))
mistake("gemma_rms_norm_backward", "the weight dropped (1 + w taken as 1, true only at initialisation)")(
    lambda g, x, w: _gemma_rms_back(g, x, w, scale=lambda w: 1.0))
mistake("gemma_rms_norm_backward", "dw summed over the first axis only (a (T, C) gradient for a (C,) weight)")(
    lambda g, x, w: _gemma_rms_back(g, x, w, rows=lambda t, C: t.sum(axis=0)))
mistake("gemma_rms_norm_backward", "eps left out of the backward's r (only a row of small values shows it)")(
    lambda g, x, w: _gemma_rms_back(g, x, w, eps=0.0))


def _geglu_back(g, a, b, erf=False, second_term=True, cubic=True):
    c = math.sqrt(2 / math.pi)
    if erf:   # the exact GELU, Φ(a) a, and its derivative Φ + a φ
        phi = 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
        return g * b * (phi + a * np.exp(-a * a / 2) / math.sqrt(2 * math.pi)), g * a * phi
    t = np.tanh(c * (a + 0.044715 * a ** 3))
    du = c * (1 + 3 * 0.044715 * a ** 2) if cubic else c
    dgelu = 0.5 * (1 + t) + (0.5 * a * (1 - t ** 2) * du if second_term else 0)
    return g * b * dgelu, g * 0.5 * a * (1 + t)


mistake("geglu_backward", "the exact (erf) GELU's derivative, not the tanh approximation's")(
    lambda g, a, b: _geglu_back(g, a, b, erf=True))
mistake("geglu_backward", "GELU's derivative without its second term: ½(1 + tanh u) only")(
    lambda g, a, b: _geglu_back(g, a, b, second_term=False))
mistake("geglu_backward", "du/da without the cubic's derivative: √(2/π) alone")(
    lambda g, a, b: _geglu_back(g, a, b, cubic=False))


@mistake("geglu_backward", "SwiGLU's backward reused (SiLU where GELU belongs)")
def _(g, a, b):
    sig = 1 / (1 + np.exp(-a))
    return g * b * sig * (1 + a * (1 - sig)), g * a * sig


def _window(a, c, rows, cols, offset, window, strict=True, causal=True, use_offset=True, origin=True):
    i = (a if origin else 0) + np.arange(rows)[:, None] + (offset if use_offset else 0)
    j = (c if origin else 0) + np.arange(cols)[None, :]
    if window is None:
        return j <= i
    seen = (j > i - window) if strict else (j >= i - window)
    return seen & (j <= i) if causal else seen


mistake("window_block_mask", "W + 1 keys: j ≥ i - W instead of j > i - W")(
    lambda a, c, rows, cols, offset, window: _window(a, c, rows, cols, offset, window, strict=False))
mistake("window_block_mask", "no causal bound: the window's left edge only")(
    lambda a, c, rows, cols, offset, window: _window(a, c, rows, cols, offset, window, causal=False))
mistake("window_block_mask", "the window ignored: plain causal attention")(
    lambda a, c, rows, cols, offset, window: _window(a, c, rows, cols, offset, None))
mistake("window_block_mask", "the offset T_k - T_q ignored (right for a prompt, wrong under a KV cache)")(
    lambda a, c, rows, cols, offset, window: _window(a, c, rows, cols, offset, window, use_offset=False))
mistake("window_block_mask", "the block's origin ignored: local row and column numbers")(
    lambda a, c, rows, cols, offset, window: _window(a, c, rows, cols, offset, window, origin=False))


@mistake("window_block_mask", "the additive mask (0 / -inf) returned, not booleans")
def _(a, c, rows, cols, offset, window):
    return np.where(_window(a, c, rows, cols, offset, window), 0.0, -np.inf)


@mistake("scaled_embedding", "no scale (Llama's embedding)")
def _(ids, table):
    return table[ids]


@mistake("scaled_embedding", "np.sqrt's float64 scalar: the product promoted to float64")
def _(ids, table):
    return table[ids] * np.sqrt(table.shape[1])


@mistake("scaled_embedding", "the scale and product in float32, cast back (not bfloat16's 25.25)")
def _(ids, table):
    return (table[ids].astype(np.float32) * np.float32(math.sqrt(table.shape[1]))).astype(table.dtype)


@mistake("scaled_embedding", "scaled by the width C, not √C")
def _(ids, table):
    return table[ids] * table.dtype.type(table.shape[1])


@mistake("scaled_embedding", "divided by √C (the attention's 1/√d habit)")
def _(ids, table):
    return table[ids] / table.dtype.type(math.sqrt(table.shape[1]))

# ---------------------------------------------------------------- key expressions that give an answer away
KEYS = {  # regular expressions on the text with all whitespace removed: code, LaTeX and plain-text forms
    "topological_order": [r"print\(inspect\.getsource\(_topological_order\)\)", r"visit\(parent\)order\.append",
                          r"order\.append\(node\)"],
    "mul_backward": [r"\\partialL/\\partiala=g\\odotb", r"g\*b,\(g\*a\)\.sum\(axis=0", r"g⊙b,Σ"],
    "matmul_backward": [r"\(GB\^\\top\)", r"\(A\^\\topG\)", r"g@b\.T,a\.T@g", r"GBᵀ.{0,3}AᵀG"],
    "softmax_backward": [r"\\langleg,y\\rangle", r"\(g\*y\)\.sum", r"y⊙\(g-Σg⊙y\)", r"y_j\\?,?\\big\(g_j-"],
    "cross_entropy_backward": [r"softmax\}?\(z\)-\\operatorname\{onehot\}", r"y_j-\\delta_\{jt\}",
                               r"softmax\(z\)-onehot\(t\)", r"\]-=1\.?0?(#[^\n]*)?return\w+/len"],
    "layer_norm_backward": [r"\\operatorname\{mean\}\(d\)-\\hatx_j", r"d-d\.mean", r"mean\(d\)-x̂⊙mean"],
    "attention_backward": [r"P\\odot\\big\(\\partialL/\\partialP-\\operatorname\{rowsum\}", r"dp-\(dp\*p\)\.sum",
                           r"ds@k/np\.sqrt", r"dV=P\^\\top\\?,?G", r"dV=PᵀG"],
    "gelu_backward": [r"\\tfrac12\(1\+\\tanhu\)\+\\tfrac12\\,x", r"\(1-t\*\*2\)\*c\*\(1\+3\*0\.044715",
                      r"\(1-\\tanh\^2u\)\\?,?\\sqrt\{2/\\pi\}\\?,?\(1\+3"],
    "block_backward": [r"np\.concatenate\(\[dq,dk,dv\],axis=1\)", r"d\[\"x1\"\]=g\+dx1", r"d\[\"x\"\]=d\[\"x1\"\]\+dx"],
    "layer_norm_steps_backward": [r"-0\.5\*\(c\[\"var\"\]\+eps\)\*\*-1\.5", r"2\*c\[\"xc\"\]\*d\[\"xc2\"\]",
                                  r"\(\\mathrm\{var\}\+\\epsilon\)\^\{-3/2\}", r"2\\,?\\mathrm\{xc\}\\odot"],
    "attention_steps_backward": [r"g\.reshape\(T,H,d\)\.transpose\(1,0,2\)",
                                 r"\[\"scores\"\]\.swapaxes\(-1,-2\)@c\[\"q\"\]",
                                 r"\[\"scaled\"\]=grads\[\"masked\"\]"],
    "llama_layer_backward": [r"gqa_kv_backward\(dk,n_kv_heads\)", r"rope_backward\(d\[\"q_rot\"\]",
                             r"d\[\"x1\"\]=g\+dx1"],
    "embedding_backward": [r"np\.add\.at\(dW,ids", r"add\.at\(", r"\\sum_\{i:\\,?\\text\{ids\}_i=v\}"],
    "gqa_kv_backward": [r"\.sum\(axis=1\)", r"\\sum_\{h:\\,?h//G=j\}", r"reshape\(n_kv,-1"],
    "lora_forward": [r"\(x\*keep\)@A\.T\)@B\.T", r"(?i)\(XA\^\\top\)\\?,?B\^\\top",
                     r"(?i)\\big\(XA\^\\top\\big\)B\^\\top",
                     r"(?i)x\^\\top\\?,?A\^\\top\\?,?B\^\\top", r"(?i)\(xAᵀ\)Bᵀ"],
    "inject_lora": [r"name\.endswith\(\"\.\"\+t\)for", r"setattr\(modules\[parent\],attr"],
    "lora_backward": [r"by_hand=\{", r"s\\,?G\^\\top\\?,?H", r"B\^\\top\\?,?G\^\\top\\?,?X", r"sGᵀH", r"BᵀGᵀX",
                      r"g\.T@h"],
    "merge": [r"s\\,?A\^\\top\\?,?B\^\\top", r"s[·*]?AᵀBᵀ", r"s\*A\.T@B\.T", r"\(s\\,?BA\)\^\\top"],
    "mark_only_lora_as_trainable": [r"requires_grad=\"lora_\"inname", r"requires_grad=name\.endswith\(\(\"lora_A\""],
    "adamw_state_bytes": [r"2\*p\.size\*p\.dtype\.itemsize", r"2\\?,?\\sum_?\{?p\}?\|p\|"],
    "timed": [r"deftimed\(fn,synchronize\):", r"synchronize\(\)start=time\.perf_counter\(\)fn\(\)synchronize\(\)"],
    "dora_backward": [r"\\frac\{\\partialL\}\{\\partialm\}=", r"gc=g\*\(m/n\)", r"s\\,?\(G\\odotc\)\^\\top\\?,?H"],
    "matched_lr": [r"lr\*ratioifoptimizer==\"adam\"elselr\*ratio\*\*2",
                   r"\\text\{lr\}'?=\\text\{lr\}\\cdot\\frac\{\\alpha\}"],
    "nf4_quantize_block": [r"searchsorted\(midpoints,scaled,side=\"left\"\)", r"w\*\(np\.float32\(1\)/absmax\)"],
    "merge_qlora": [r"W_hat\+np\.float32\(s\)\*\(A\.T@B\.T\)", r"\\hat\{?W\}?\+s\\,?A\^\\top\\?,?B\^\\top",
                    r"Ŵ\+s[·*]?AᵀBᵀ"],
    "merge_pair": [r"out\.append\(symbols\[i\]\+symbols\[i\+1\]\)i\+=2"],
    "rms_norm_backward": [r"\\hatx_j\\operatorname\{mean\}\(d\\odot\\hatx\)", r"r\*\(d-xhat\*\(d\*xhat\)\.mean"],
    "rope": [r"x\*c\+rotate_half\(x\)\*s", r"\[-x2,x1\]", r"x_2\\cos\\theta\+x_1\\sin\\theta"],
    "rope_backward": [r"R\(\\theta\)\^\\top=", r"g\*c-rotate_half"],
    "swiglu_backward": [r"\\sigma\(a\)\\big\(1\+a", r"sig\*\(1\+a\*\(1-sig\)\)", r"σ\(a\)\(1\+a\(1-σ"],
    "gemma_rms_norm_backward": [r"d=g\*\(1\+w\)", r"d=g\\odot\(1\+w\)", r"g⊙\(1\+w\)", r"\(g\*xhat\)\.reshape\(-1",
                                r"d=g\\odotv"],
    "geglu_backward": [r"0\.5\*\(1\+t\)\+0\.5\*a\*\(1-t\*\*2\)", r"\\tfrac12\(1\+t\)\+\\tfrac12\\,?a\\,?\(1-t\^2\)",
                       r"\(g\\odotb\)\\odot\\Big\(\\tfrac12", r"g\*b\*dgelu", r"½\(1\+t\)\+½a\(1-t²\)"],
    "window_block_mask": [r"a\+np\.arange\(rows\)\[:,None\]\+offset", r"c\+np\.arange\(cols\)\[None,:\]",
                          r"i=a\+r\+\\text\{offset\}", r"\(j>i-window\)&\(j<=i\)"],
    "scaled_embedding": [r"table\.dtype\.type\(math\.sqrt", r"dtype\.type\(np\.sqrt", r"embed_scale\.to\(",
                         r"multipliedby\$\\sqrt\{C\}\$", r"rowsaremultipliedby", r"√C\)?,roundedtothetable"],
}


def _squash(text):
    return re.sub(r"\s+", "", text)


def _returned_expressions(solution_source):
    """The solution's return expressions (whitespace removed), the lines that are the answer."""
    keys = []
    for line in solution_source.splitlines():
        code = line.split("#", 1)[0].strip()
        expression = _squash(code[len("return "):])
        if code.startswith("return ") and len(expression) > 16:       # not a bare tuple of names: the spec says those
            keys.append(expression)
    return keys


def test_every_check_module_imports():
    assert not course.IMPORT_ERRORS


def test_at_least_twenty_four_exercises_two_in_each_of_01_to_04():
    per_notebook = {}
    for notebook, name, *_ in EXERCISES:
        per_notebook.setdefault(notebook[:2], []).append(name)
    assert len(EXERCISES) >= 24, per_notebook
    assert all(len(per_notebook.get(n, [])) >= 2 for n in ("01", "02", "03", "04")), per_notebook


def test_every_exercise_has_three_plausible_mistakes():
    names = {name for _, name, *_ in EXERCISES}
    short = {n: len(MISTAKES.get(n, [])) for n in names if len(MISTAKES.get(n, [])) < 3}
    assert not short, f"exercises with fewer than three listed mistakes: {short}"


@pytest.mark.parametrize("notebook, name, stub, solution, earlier, before", EXERCISES, ids=IDS)
def test_check_fails_on_stub_and_mistakes_and_passes_on_solution(notebook, name, stub, solution, earlier, before,
                                                                 capsys):
    assert stub is not None, f"{notebook}: no stub cell (with '# YOUR CODE') defines {name}"
    assert "raise NotImplementedError" in stub
    assert solution.metadata.get("jupyter", {}).get("source_hidden"), f"{notebook}: {name}'s solution is not collapsed"
    assert course.check(_define(stub, name)) is False
    assert "not written yet" in capsys.readouterr().out
    assert course.check(_define(solution.source, name, earlier)) is True
    for wrong in MISTAKES[name]:
        with pytest.raises(course.ExerciseFailed):
            course.check(wrong)
            pytest.fail(f"{name}'s check accepted a wrong answer: {wrong.what}")


@pytest.mark.parametrize("notebook, name, stub, solution, earlier, before", EXERCISES, ids=IDS)
def test_no_visible_cell_before_the_stub_gives_the_answer(notebook, name, stub, solution, earlier, before):
    text = _squash(before)
    for key in _returned_expressions(solution.source):
        assert key not in text, f"{notebook}: a visible cell before {name}'s stub shows its answer {key!r}"
    for pattern in KEYS.get(name, []):
        assert not re.search(pattern, text), \
            f"{notebook}: a visible cell before {name}'s stub shows {pattern!r}; move it to a hint or after the check"


def test_every_exercise_has_key_patterns():
    """The return lines catch an answer written as code; a formula in LaTeX or prose needs a pattern."""
    missing = sorted({name for _, name, *_ in EXERCISES} - set(KEYS))
    assert not missing, f"exercises without KEYS patterns: {missing}"


@pytest.mark.parametrize("op, name", [(ops.softmax, "softmax_backward"), (ops.cross_entropy, "cross_entropy_backward"),
                                      (ops.layer_norm, "layer_norm_backward"), (ops.gelu, "gelu_backward")])
def test_public_op_help_does_not_answer_its_exercise(op, name):
    """Shift-Tab on ``ops.softmax`` beside the stub shows this docstring: the derivation lives on the
    backward function, which the learner reads after the exercise."""
    text = _squash(op.__doc__ or "")
    for pattern in KEYS[name]:
        assert not re.search(pattern, text), f"{op.__name__}'s docstring shows {pattern!r}, the answer to {name}"


def test_key_patterns_name_real_formulas():
    """Each exercise's KEYS must match its notebook somewhere (a hint, the solution, the derivation after
    the check): patterns that match nothing would guard nothing. The other patterns are forms an edit
    could write the same answer in (LaTeX, Unicode, code)."""
    texts = {}
    for path in NOTEBOOK_DIR.glob("*.ipynb"):
        texts[path.stem] = _squash("\n".join(c.source for c in nbformat.read(path, as_version=4).cells))
    where = {name: notebook for notebook, name, *_ in EXERCISES}
    for name, patterns in KEYS.items():
        if name in where:
            assert any(re.search(pattern, texts[where[name]]) for pattern in patterns), \
                f"none of KEYS[{name!r}] is anywhere in {where[name]}"
