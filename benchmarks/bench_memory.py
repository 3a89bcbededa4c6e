"""Memory: attention that never holds (T, T), gradient checkpointing, and GPT-2 XL's shape in NF4.

Every case runs in its own process (``workers.spawn``: 2 threads), so its peak RSS (VmHWM)
is its own; sides that are compared take their steps in turn, round after round, in one run.

* ``attention``: forward + backward at T 2,048, 12 heads of 64, B 1, float32: peak NumPy
  allocations (tracemalloc) of the memory-efficient kernels and of the plain ones (which keep P),
  against one (H, T, T) float32 tensor.
* ``switch``: the same op at GPT-2 small's attention shape (12 heads of 64, B 2) for several T,
  both kernels interleaved: where the memory-efficient one stops being slower (FLASH_MIN_T).
* ``gpt2-small``: GPT-2 small's shape (random weights), LoRA r=8 on c_attn, T 1,024, B 2: ours with
  and without gradient checkpointing, and transformers + PEFT with its own
  ``gradient_checkpointing_enable()``; median step time, peak RSS.
* ``gpt2-xl``: GPT-2 XL's shape (1.56B parameters, 48 × 1600), NF4 base with double quantization,
  LoRA r=8 on c_attn, checkpointing, T 512, B 1: load time, step time, loss, peak RSS and where
  each MB goes. The checkpoint (float16, 3.1 GB) is written tensor by tensor in the safetensors
  format (header first, then each tensor drawn and written alone), so 6 GB never sit in memory.
* ``notebook07``: activations held after the forward (tracemalloc), with and without checkpointing
  and memory-efficient attention, for notebook 07's 4-layer model (``activation_memory``).

    python benchmarks/bench_memory.py --only attention     # each case alone; results_memory.json keeps them
    python benchmarks/bench_memory.py                      # all (gpt2-xl takes ~10 minutes)
"""

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from bench_gpt2_small import make_checkpoint, tokens  # noqa: E402
from workers import interleaved, peak_rss_mb, rss_mb, run_once as run_worker_once, run_worker, serve  # noqa: E402

RESULTS_JSON, RESULTS_MD = HERE / "results_memory.json", HERE / "results_memory.md"
MIB = 1 << 20
LORA_R = 8
XL = dict(vocab_size=50257, n_positions=1024, n_embd=1600, n_layer=48, n_head=25)


# ---- helpers ------------------------------------------------------------------------------------
def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def attention_step(qkv, n_head, flash):
    """Forward + backward of GPT-2's attention core with the memory-efficient kernels or the plain ones."""
    from lora_np import ops
    from lora_np.ops.attention import memory_efficient_attention
    with memory_efficient_attention(flash):
        y = ops.causal_self_attention(qkv, n_head)
        y.backward(np.ones(y.shape, dtype=y.dtype))


def activation_memory(model, idx, targets, checkpointing, flash):
    """Bytes of NumPy arrays held after the forward (the activations its graph keeps for the backward),
    by tracemalloc, with gradient checkpointing and the memory-efficient attention on or off; the
    backward then runs, so the model is ready for the next call."""
    from lora_np.ops.attention import memory_efficient_attention
    (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
    try:
        with memory_efficient_attention(flash):
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            _, loss = model(idx, targets)
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            loss.backward()
        model.zero_grad()
    finally:
        model.gradient_checkpointing_disable()
    return held


# ---- workers (each in its own process) ----------------------------------------------------------
def attention_worker(case):
    import lora_np
    from lora_np import Tensor
    lora_np.parallel.tune_host_allocator()
    h, t, d = 12, case["T"], 64
    qkv = Tensor(np.random.default_rng(0).standard_normal((1, t, 3 * h * d), dtype=np.float32), requires_grad=True)
    out = {"one_probability_tensor_mb": h * t * t * 4 / MIB}
    for flash in (True, False):
        tracemalloc.start()
        attention_step(qkv, h, flash)
        out["flash_peak_mb" if flash else "plain_peak_mb"] = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    times = {True: [], False: []}
    for _ in range(3):
        for flash in (True, False):
            start = time.perf_counter()
            attention_step(qkv, h, flash)
            times[flash].append(time.perf_counter() - start)
    out.update(flash_ms=1000 * float(np.median(times[True])), plain_ms=1000 * float(np.median(times[False])))
    print(json.dumps(out), flush=True)


def switch_worker(case):
    import lora_np
    from lora_np import Tensor
    lora_np.parallel.tune_host_allocator()
    rows = []
    for t in case["Ts"]:
        qkv = Tensor(np.random.default_rng(0).standard_normal((2, t, 3 * 768), dtype=np.float32), requires_grad=True)
        attention_step(qkv, 12, True)   # warm-up, both
        attention_step(qkv, 12, False)
        wall, cpu = {True: [], False: []}, {True: [], False: []}
        for _ in range(case["repeats"]):
            for flash in (True, False):
                start, start_cpu = time.perf_counter(), time.process_time()
                attention_step(qkv, 12, flash)
                wall[flash].append(1000 * (time.perf_counter() - start))
                cpu[flash].append(1000 * (time.process_time() - start_cpu))
        rows.append({"T": t, **{f"{'flash' if f else 'plain'}_{kind}": float(np.median(d[f]))
                                for f in (True, False) for kind, d in (("ms", wall), ("cpu_ms", cpu))}})
    print(json.dumps(rows), flush=True)


def ours_train(case):
    """lora_np, LoRA r=8 on c_attn, AdamW; ``checkpointing`` and ``quantize`` from the case."""
    import lora_np
    from lora_np.optim import AdamW
    lora_np.parallel.tune_host_allocator()
    start_rss, start = rss_mb(), time.perf_counter()
    quantize = case.get("quantize")
    model = lora_np.load_model(case["checkpoint"], quantize=quantize, double_quant=True).train()
    info = {"load_s": time.perf_counter() - start, "rss_after_import_mb": start_rss,
            "rss_after_load_mb": peak_rss_mb(), "held_after_load_mb": rss_mb()}
    targets = case.get("targets", ["c_attn"])
    lora_np.add_lora(model, lora_np.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=targets))
    if case["checkpointing"]:
        model.gradient_checkpointing_enable()
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = tokens(*case["shape"])
    x, y = x % model.config.vocab_size, y % model.config.vocab_size
    losses, cpu_s = [], []

    def step():
        cpu = time.process_time()   # CPU seconds of all threads: less at the mercy of a loaded machine
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        cpu_s.append(time.process_time() - cpu)
        held.update(model_bytes(model, opt))   # after a step, so that AdamW's moments exist

    held = {}
    serve(step, info | {"losses": losses, "cpu_s": cpu_s, "bytes": held})


def peft_train(case):
    """transformers + PEFT, the same LoRA, with its own gradient_checkpointing_enable()."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(2)
    model = GPT2LMHeadModel.from_pretrained(case["checkpoint"])
    loaded = peak_rss_mb()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"],
                                             lora_dropout=0.0, fan_in_fan_out=True, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = (torch.tensor(a) for a in tokens(*case["shape"]))
    cpu_s = []

    def step():
        cpu = time.process_time()
        logits = model(input_ids=x, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        cpu_s.append(time.process_time() - cpu)

    serve(step, {"rss_after_load_mb": loaded, "cpu_s": cpu_s})


def model_bytes(model, opt):
    """MiB of arrays by kind: token embedding, positions, 4-bit codes and statistics, other float
    weights (layer norms, biases), adapters, AdamW's moments."""
    from lora_np.quant import QuantWeight
    parts = dict.fromkeys(("wte", "wpe", "quantized linears", "float linears", "norms and biases", "adapters"), 0)
    for name, p in model.named_parameters():
        kind = ("wte" if "wte" in name or "embed_tokens" in name else "wpe" if "wpe" in name
                else "adapters" if "lora_" in name
                else "float linears" if p.ndim == 2 else "norms and biases")
        parts[kind] += p.data.nbytes
    for _, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, QuantWeight):
            arrays = [w.codes, w.absmax] + list(w.stats[:2] if w.stats else [])
            parts["quantized linears"] += sum(a.nbytes for a in arrays if a is not None)
    parts["AdamW moments"] = sum(a.nbytes for state in opt.state.values() for a in state.values()
                                 if hasattr(a, "nbytes"))
    return {k: v / MIB for k, v in parts.items()}


WORKERS = {"attention": attention_worker, "switch": switch_worker, "ours_train": ours_train,
           "peft_train": peft_train}


# ---- checkpoints --------------------------------------------------------------------------------
def xl_tensors(cfg):
    """(name, shape) of GPT-2 XL's checkpoint, in Hugging Face's names and Conv1D (in, out) layout."""
    c, out = cfg["n_embd"], [("transformer.wte.weight", (cfg["vocab_size"], cfg["n_embd"])),
                             ("transformer.wpe.weight", (cfg["n_positions"], cfg["n_embd"]))]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        for name, shape in (("ln_1.weight", (c,)), ("ln_1.bias", (c,)), ("attn.c_attn.weight", (c, 3 * c)),
                            ("attn.c_attn.bias", (3 * c,)), ("attn.c_proj.weight", (c, c)), ("attn.c_proj.bias", (c,)),
                            ("ln_2.weight", (c,)), ("ln_2.bias", (c,)), ("mlp.c_fc.weight", (c, 4 * c)),
                            ("mlp.c_fc.bias", (4 * c,)), ("mlp.c_proj.weight", (4 * c, c)), ("mlp.c_proj.bias", (c,))):
            out.append((p + name, shape))
    return out + [("transformer.ln_f.weight", (c,)), ("transformer.ln_f.bias", (c,))]


def write_streamed_checkpoint(path, cfg):
    """config.json + model.safetensors with random float16 weights (std 0.02; layer norms 1 and 0),
    written one tensor at a time after the header: the file is never held in memory."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_ctx": cfg["n_positions"], **cfg}))
    entries, header, offset = xl_tensors(cfg), {}, 0
    for name, shape in entries:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(0)
    with open(path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in entries:
            if "ln_" in name:
                a = np.full(shape, 1.0 if name.endswith("weight") else 0.0, dtype=np.float16)
            else:
                a = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
            f.write(a.tobytes())
    from safetensors import safe_open   # the package checks what we wrote: header, offsets, sizes
    with safe_open(path / "model.safetensors", framework="numpy") as f:
        assert len(list(f.keys())) == len(entries)
    return path


# ---- the driver ---------------------------------------------------------------------------------
def run_once(case, timeout=1800):
    return run_worker_once(__file__, case, timeout)


def run_train(sides, steps, warmup):
    """Workers started together, stepping in turn (median ms); then each one's memory facts."""
    return interleaved(__file__, sides, warmup, steps)


def case_attention(args):
    return run_once({"kind": "attention", "T": 2048})


def case_switch(args):
    return run_once({"kind": "switch", "Ts": [256, 512, 1024, 2048], "repeats": args.repeats})


def case_gpt2_small(args):
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp)
        shape = (1024, 2)
        sides = {"ours_checkpointing": {"kind": "ours_train", "checkpoint": tmp, "shape": shape, "checkpointing": True},
                 "ours_plain": {"kind": "ours_train", "checkpoint": tmp, "shape": shape, "checkpointing": False},
                 "peft_checkpointing": {"kind": "peft_train", "checkpoint": tmp, "shape": shape}}
        return run_train(sides, args.steps, 1)


def case_gpt2_xl(args):
    """``--xl-dir``: a folder to keep the checkpoint in (written there if it has none), else a temporary one."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.xl_dir or tmp)
        start = time.perf_counter()
        if not (folder / "model.safetensors").exists():
            write_streamed_checkpoint(folder, XL)
        written = time.perf_counter() - start
        case = {"kind": "ours_train", "checkpoint": str(folder), "shape": (512, 1), "checkpointing": True,
                "quantize": "nf4"}
        result = run_train({"ours_nf4_checkpointing": case}, args.xl_steps, 0)
    return {**result, "write_s": written}


def case_qwen3(args):
    """Qwen3-0.6B's shape (bench_llm.py's checkpoint, written by transformers in float32), NF4 base with
    double quantization, LoRA r=8 on q/k/v, checkpointing, T 512, B 1."""
    from bench_llm import make_checkpoint as make_llm_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        make_llm_checkpoint(tmp, "qwen3-0.6b")
        case = {"kind": "ours_train", "checkpoint": tmp, "shape": (512, 1), "checkpointing": True, "quantize": "nf4",
                "targets": ["q_proj", "k_proj", "v_proj"]}
        return run_train({"ours_nf4_checkpointing": case}, args.xl_steps, 0)


def case_notebook07(args):
    """Notebook 07's model (4 layers × 256, T 64, B 8; LoRA r=8 on every Linear): activations held."""
    import lora_np
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora
    lora_np.manual_seed(0)
    model = add_lora(GPT(GPTConfig(vocab_size=96, block_size=64, n_layer=4, n_head=4, n_embd=256)).train(),
                     LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"]))
    x = np.random.default_rng(0).integers(0, 96, size=(8, 65))
    return {f"{'checkpointing' if c else 'plain'}_{'flash' if f else 'keeps_P'}_kb":
            activation_memory(model, x[:, :-1], x[:, 1:], c, f) / 1024 for c in (False, True) for f in (False, True)}


CASES = {"attention": case_attention, "switch": case_switch, "gpt2-small": case_gpt2_small,
         "gpt2-xl": case_gpt2_xl, "qwen3-0.6b": case_qwen3, "notebook07": case_notebook07}


# ---- the report ---------------------------------------------------------------------------------
def _header(entry):
    return (f"One run, {entry['date']}, {entry['seconds']:.0f} s; "
            f"load average {entry['load_before']} before, {entry['load_after']} after.")


def report_attention(entry):
    r = entry["result"]
    one = r["one_probability_tensor_mb"]
    return ["## Attention alone: T 2,048, 12 heads of 64, B 1, float32, forward + backward", "", _header(entry), "",
            "| kernels | peak NumPy allocations (MiB) | × one (H, T, T) float32 tensor | time (ms, median of 3) |",
            "|---|---|---|---|",
            f"| memory-efficient (flash) | {r['flash_peak_mb']:.1f} | {r['flash_peak_mb'] / one:.3f} (target ≤ 0.35) "
            f"| {r['flash_ms']:.0f} |",
            f"| plain (keeps P) | {r['plain_peak_mb']:.1f} | {r['plain_peak_mb'] / one:.3f} | {r['plain_ms']:.0f} |",
            ""]


def report_switch(entry):
    lines = ["## Where the memory-efficient kernels stop being slower (FLASH_MIN_T)", "",
             "GPT-2 small's attention core (12 heads of 64, B 2, float32), forward + backward, both kernels "
             "interleaved, median; CPU time (all threads) is less at the mercy of a loaded machine.",
             _header(entry), "",
             "| T | flash (ms) | plain (ms) | flash / plain | flash CPU (ms) | plain CPU (ms) | flash / plain (CPU) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['T']:,} | {r['flash_ms']:.0f} | {r['plain_ms']:.0f} | {r['flash_ms'] / r['plain_ms']:.2f} | "
              f"{r['flash_cpu_ms']:.0f} | {r['plain_cpu_ms']:.0f} | {r['flash_cpu_ms'] / r['plain_cpu_ms']:.2f} |"
              for r in entry["result"]]
    return lines + [""]


def _cpu(side):
    """Median CPU seconds of the timed steps (the warm-up step is the first of ``cpu_s``)."""
    return float(np.median(side["cpu_s"][1:] or side["cpu_s"])) if side.get("cpu_s") else float("nan")


def report_gpt2_small(entry):
    r = entry["result"]
    ck, plain, peft = r["ours_checkpointing"], r["ours_plain"], r["peft_checkpointing"]
    rows = [("lora_np, checkpointing", ck), ("lora_np, no checkpointing", plain),
            ("transformers + PEFT, gradient_checkpointing_enable()", peft)]
    lines = ["## GPT-2 small's shape, LoRA r=8 on c_attn, T 1,024, B 2", "",
             "Random weights (124M parameters), float32, AdamW; 2 threads per process, "
             "the three take their steps in turn.",
             _header(entry), "", "| | step (ms, median) | CPU s per step (median, all threads) | peak RSS (MiB) | "
             "peak RSS of the steps (MiB) |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {x['ms']:,.0f} | {_cpu(x):.1f} | {x['peak_rss_mb']:,.0f} | {x['train_peak_rss_mb']:,.0f} |"
              for name, x in rows]
    lines += ["", f"Checkpointing: step {ck['ms'] / plain['ms']:.2f}× without it in wall time, "
              f"{_cpu(ck) / _cpu(plain):.2f}× in CPU time (target ≤ 1.35), peak RSS "
              f"{ck['peak_rss_mb'] / 1024:.2f} GiB (target ≤ 1.0); against PEFT with its checkpointing: time "
              f"{ck['ms'] / peft['ms']:.2f}× (CPU {_cpu(ck) / _cpu(peft):.2f}×), memory "
              f"{ck['peak_rss_mb'] / peft['peak_rss_mb']:.2f}×.", ""]
    return lines


def report_gpt2_xl(entry):
    r = entry["result"]["ours_nf4_checkpointing"]
    b = r["bytes"]
    lines = ["## GPT-2 XL's shape (1.56B parameters, 48 × 1600), NF4 base + double quantization, LoRA r=8 on c_attn, "
             "checkpointing, T 512, B 1", "", _header(entry),
             (f"Checkpoint written tensor by tensor in {entry['result']['write_s']:.0f} s; "
              if entry["result"]["write_s"] > 1
              else "Checkpoint reused from --xl-dir; ") + f"load (read + quantize) {r['load_s']:.0f} s.", "",
             f"* step times (s): {', '.join(f'{t / 1000:.1f}' for t in r['times_ms'])} wall, "
             f"{', '.join(f'{t:.1f}' for t in r.get('cpu_s', []))} CPU (all threads); losses: "
             f"{', '.join(f'{x:.4f}' for x in r['losses'])}",
             f"* peak RSS: {r['peak_rss_mb']:,.0f} MiB = {r['peak_rss_mb'] / 1024:.2f} GiB (target ≤ 1.5 GiB); "
             f"of the steps alone {r['train_peak_rss_mb']:,.0f} MiB; "
             f"at the end of loading {r['held_after_load_mb']:,.0f} MiB", "",
             "Where the memory goes (MiB):", "", "| part | MiB |", "|---|---|",
             f"| Python, NumPy, lora_np imported (RSS before loading) | {r['rss_after_import_mb']:,.0f} |"]
    if not b["AdamW moments"]:   # counted before the first step made them: two float32 moments per adapter weight
        b = {**b, "AdamW moments": 2 * b["adapters"]}
        b["AdamW moments (2 × adapters: not yet made when this run counted)"] = b.pop("AdamW moments")
    lines += [f"| {k} | {v:,.1f} |" for k, v in b.items() if v]
    arrays = sum(b.values())
    block_inputs = 48 * 512 * 1600 * 4 / MIB
    lines += [f"| checkpointed block inputs (48 × T × C float32) | {block_inputs:,.1f} |",
              f"| the rest of the peak: one block recomputed with its gradients, the chunked LM head, "
              f"dequantized weight bands, allocator slack | "
              f"{r['peak_rss_mb'] - r['rss_after_import_mb'] - arrays - block_inputs:,.0f} |", ""]
    return lines


def report_notebook07(entry):
    r = entry["result"]
    return ["## Notebook 07's model: activations held after the forward (tracemalloc, KiB)", "",
            "4 layers × 256, T 64, B 8, LoRA r=8 on every Linear (`activation_memory` in this file).",
            _header(entry), "",
            "| | attention keeps P | memory-efficient attention |", "|---|---|---|",
            f"| no checkpointing | {r['plain_keeps_P_kb']:,.0f} | {r['plain_flash_kb']:,.0f} |",
            f"| gradient checkpointing | {r['checkpointing_keeps_P_kb']:,.0f} | {r['checkpointing_flash_kb']:,.0f} |",
            ""]


def report_qwen3(entry):
    r = entry["result"]["ours_nf4_checkpointing"]
    return ["## Qwen3-0.6B's shape (28 × 1024, 16 / 8 heads of 128, vocabulary 151,936), NF4 + double quantization, "
            "LoRA r=8 on q/k/v, checkpointing, T 512, B 1", "", _header(entry), "",
            f"* load (each weight read, quantized, dropped): {r['load_s']:.0f} s, peak RSS "
            f"{r['rss_after_load_mb']:,.0f} MiB: the float32 Llama is never built",
            f"* step times (s): {', '.join(f'{t / 1000:.1f}' for t in r['times_ms'])} wall, "
            f"{', '.join(f'{t:.1f}' for t in r.get('cpu_s', []))} CPU; "
            f"losses {', '.join(f'{x:.4f}' for x in r['losses'])}",
            f"* peak RSS of the training steps: {r['train_peak_rss_mb']:,.0f} MiB; held after loading "
            f"{r['held_after_load_mb']:,.0f} MiB, of which the float32 tied embedding "
            f"{r['bytes'].get('wte', 0):,.0f} and the NF4 linears "
            f"{r['bytes'].get('quantized linears', 0):,.0f}", ""]


REPORTS = {"attention": report_attention, "switch": report_switch, "gpt2-small": report_gpt2_small,
           "gpt2-xl": report_gpt2_xl, "qwen3-0.6b": report_qwen3, "notebook07": report_notebook07}


def write_report(results):
    sys.path.insert(0, str(HERE))
    from bench_train import machine_description
    lines = ["# Memory: attention without (T, T), gradient checkpointing, GPT-2 XL in NF4", "",
             f"Machine: {machine_description()}. Each case in its own process (peak RSS = VmHWM), 2 threads.",
             "Command: `python benchmarks/bench_memory.py [--only CASE]`.", ""]
    for name in CASES:
        if name in results:
            lines += REPORTS[name](results[name])
    RESULTS_MD.write_text("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(CASES), action="append", help="run these cases (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (gpt2-small)")
    parser.add_argument("--xl-steps", type=int, default=2, help="timed steps (gpt2-xl)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per kernel and T (switch)")
    parser.add_argument("--xl-dir", default=None,
                        help="folder that keeps the GPT-2 XL checkpoint (3.1 GB) between runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(WORKERS, args.worker)
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    for name in args.only or list(CASES):
        load_before, start = load_average(), time.perf_counter()
        result = CASES[name](args)
        results[name] = {"result": result, "seconds": time.perf_counter() - start, "load_before": load_before,
                         "load_after": load_average(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(name, json.dumps(result)[:2000], flush=True)
        RESULTS_JSON.write_text(json.dumps(results, indent=1))
        write_report(results)


if __name__ == "__main__":
    main()
