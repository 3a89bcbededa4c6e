"""The Llama family and Gemma 3 at real shapes: lora_np against transformers + PEFT, same checkpoint, same tokens.

Two random checkpoints, written once by ``transformers``' ``save_pretrained`` (float32) and loaded by
both sides (``lora_np.load_model``; ``AutoModelForCausalLM.from_pretrained``):

* SmolLM2-135M's shape: Llama, 30 layers × 576, 9 heads / 3 KV heads, vocabulary 49,152, tied head;
  LoRA step at T 256 × B 2.
* Qwen3-0.6B's shape: 28 layers × 1024, 16 heads / 8 KV heads of size 128, q/k norms, vocabulary
  151,936, tied head; LoRA step at T 128 × B 1.

LoRA r=16 (α=32) on every projection (q, k, v, o, gate, up, down), AdamW on the adapters, float32.
Each side runs in its own process with 2 threads (peak RSS from VmHWM, loading included); the two
sides of a training case take their steps in turn, so a noisy minute slows both alike. Greedy
generation with a KV cache on the base model: tokens/s against ``model.generate``. The process
and measuring helpers, and the workers' common part, are ``workers.py``'s.

    python benchmarks/bench_llm.py       # ~10 minutes, up to ~8 GiB; writes benchmarks/results_llm.md

With ``--family gemma3`` the two models are Gemma 3's (``Gemma3ForCausalLM``, random float32 weights):

* Gemma 3 270M's shape: 18 layers × 640, 4 heads / 1 KV head of 256, MLP 2,048 (GeGLU), sliding window
  512 on five layers of six (RoPE bases 10,000 local, 1,000,000 global), query_pre_attn_scalar 256,
  vocabulary 262,144, tied head: PEFT's logits alone are B·T·262,144 floats (512 MiB at T 256 × B 2),
  which lora_np's chunked head never forms;
* Gemma 3 1B's shape: 26 layers × 1152, 4 heads / 1 KV head of 256, MLP 6,912, the same vocabulary;

both at T 256 × B 2, LoRA r=16 on every projection as above. ``--train-only`` skips the generation runs.

    python benchmarks/bench_llm.py --family gemma3 --train-only --steps 3
                                          # up to ~12 GiB; writes benchmarks/results_llm_gemma3.md
    OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1 \
        python benchmarks/bench_llm.py --profile-train random --only gemma3-270m
                                          # where a LoRA step's CPU time goes (cProfile, one thread)

With ``--bf16`` the checkpoint is written in bfloat16, as the hub ships these models, and four
training sides step in turn: lora_np with the frozen base kept in bf16 (``quantize="bf16"``) and
widened to float32 (the same values), transformers + PEFT in float32 and with bf16 weights
(``dtype=torch.bfloat16``, no autocast: one step only, for its peak RSS, since torch's bf16 matmuls
are many times slower on a CPU without bf16 instructions); generation (greedy and top-50 sampled, ``--new-tokens``)
runs lora_np's two bases against transformers in float32. Every worker has OMP_WAIT_POLICY=PASSIVE.

    python benchmarks/bench_llm.py --bf16 --new-tokens 128    # writes benchmarks/results_llm_bf16.md

With ``--decode``, generation alone from the float32 checkpoint (issue 36 item 2): lora_np and
transformers, greedy and top-50 sampled, ``--new-tokens`` after a 16-token prompt, in rounds (each
round runs every side once, in its own process, so a noisy minute slows all alike; medians over
``--repeats`` rounds). ``--baseline DIR`` adds lora_np from an earlier checkout as a third side
(``git archive main | tar -x -C DIR``): before and after in the same run.

    python benchmarks/bench_llm.py --decode --new-tokens 128 --repeats 1 --baseline /tmp/before
                                                              # writes benchmarks/results_llm_decode.md
    OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1 python benchmarks/bench_llm.py --profile-decode bf16
                                                              # where a decode step's CPU time goes
    OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1 python benchmarks/bench_llm.py --profile-train bf16 --only smollm2-135m
                                                              # where a LoRA step's CPU time goes
    python benchmarks/bench_llm.py --profile-memory bf16 --only smollm2-135m
                                                              # what a LoRA step holds for its backward
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # lora_np itself, for the --profile-* runs in this process
from workers import (NEW_TOKENS, PROMPT_TOKENS, THREADS, comparison_arguments, finish, hf_greedy,  # noqa: E402
                     interleaved, ours_greedy, ours_lora_train, peft_lora_train, run_once, run_worker, train_pair)
from bench_train import machine_description  # noqa: E402

LORA_R = 16
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GEMMA3_SHARED = dict(  # Gemma 3 270M's and 1B's common settings (transformers' Gemma3TextConfig); layer_types 5:1
    sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    tie_word_embeddings=True, pad_token_id=None)
MODELS = {
    "smollm2-135m": dict(kind="llama", shape=(256, 2), config=dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True)),
    "qwen3-0.6b": dict(kind="qwen3", shape=(128, 1), config=dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "gemma3-270m": dict(kind="gemma3", shape=(256, 2), config=dict(
        vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, **GEMMA3_SHARED)),
    "gemma3-1b": dict(kind="gemma3", shape=(256, 2), config=dict(
        vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, **GEMMA3_SHARED)),
}


FAMILIES = {  # --family: the models a run measures, the results file, the report's description of them
    "llama": (("smollm2-135m", "qwen3-0.6b"), "results_llm",
              "Random weights at SmolLM2-135M's shape (30 × 576, 9/3 heads, vocabulary 49,152) and Qwen3-0.6B's "
              "(28 × 1024, 16/8 heads of 128, vocabulary 151,936)"),
    "gemma3": (("gemma3-270m", "gemma3-1b"), "results_llm_gemma3",
               "Random weights at Gemma 3 270M's shape (18 × 640, 4/1 heads of 256, MLP 2,048, GeGLU, four (1 + w) "
               "norms and q/k norms per layer, sliding window 512 on five layers of six, vocabulary 262,144) and "
               "Gemma 3 1B's (26 × 1152, 4/1 heads of 256, MLP 6,912), both at T 256 × B 2 (shorter than the "
               "window: the local layers attend causally as the global ones)"),
}


# Issue 36 item 4: a 4-bit frozen base at 1-1.5B shapes, built in memory (no checkpoint is written).
SCALE_MODELS = {
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, qkv_bias=True, model_type="qwen2",
                         rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
                         tie_word_embeddings=True),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-5,
                         max_position_embeddings=131072, tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
SCALE_SHAPE = (512, 1)                         # T 512 x B 1
SCALE_BASES = ("float32", "nf4", "gguf:Q4_0")  # the GGUF base: llama.cpp's 4-bit blocks, decoded by its codec


def make_checkpoint(path, name, bf16=False):
    import torch
    import transformers
    spec = MODELS[name]
    t = transformers
    config_class, model_class = {"llama": (t.LlamaConfig, t.LlamaForCausalLM),
                                 "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
                                 "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM)}[spec["kind"]]
    torch.manual_seed(0)
    model = model_class(config_class(**spec["config"], bos_token_id=None, eos_token_id=None))
    (model.to(torch.bfloat16) if bf16 else model).save_pretrained(path)


def tokens(vocab, t, b, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab, size=(b, t + 1))
    return ids[:, :-1], ids[:, 1:]


def vocab_of(case):
    return MODELS[case["model"]]["config"]["vocab_size"]


# ---- workers (each in its own process) ----------------------------------------------------------
def _ours_load(case):
    """lora_np's model; ``base`` "bf16": the Linear weights kept in bfloat16."""
    import lora_np
    return lora_np.load_model(case["checkpoint"], quantize="bf16" if case.get("base") == "bf16" else None)


def _hf_load(case):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(case["checkpoint"], dtype=getattr(torch, case.get("torch_dtype",
                                                                                                 "float32")))


def ours_train(case):
    ours_lora_train(lambda: _ours_load(case), PROJECTIONS, LORA_R, tokens(vocab_of(case), *case["shape"]))


def peft_train(case):
    peft_lora_train(lambda: _hf_load(case), dict(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=PROJECTIONS),
                    tokens(vocab_of(case), *case["shape"]))


def _generation(case):
    return (tokens(vocab_of(case), PROMPT_TOKENS, 1)[0], case["repeats"], case.get("new_tokens", NEW_TOKENS),
            case.get("sample", False))


def ours_generate(case):
    ours_greedy(lambda: _ours_load(case), *_generation(case))


def hf_generate(case):
    hf_greedy(lambda: _hf_load(case), *_generation(case))


def scale_layers(name, layers):
    """``--layers``: a number of decoder layers, or None for the model's own depth (``--layers full``)."""
    return SCALE_MODELS[name]["num_hidden_layers"] if layers is None else layers


def q6_k_blocks(x):
    """(n, 256) float32 values -> (n, 210) uint8 Q6_K blocks (llama.cpp's ``block_q6_K``: ql, qh, 16 int8
    scales, float16 d; decoded by ``gguf.quants.Q6_K`` / lora_np's ``gguf_decode.decode_q6_k``). The steps of
    llama.cpp's ``quantize_row_q6_K_ref`` without ``make_qx_quants``' least-squares search of each sub-block's
    scale: a sub-block's scale maps its largest-magnitude value to -32 (s_j = max_j / -32, signed), d = the
    largest-magnitude s_j / -128 in float16, scale_j = round(s_j / d) (≤ 127), q = clip(round(x / (d scale_j)),
    -32, 31) + 32, packed as the decoder reads it. (The gguf package decodes Q6_K but cannot write it.)"""
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    at = np.abs(sub).argmax(axis=2)[..., None]
    s = np.take_along_axis(sub, at, axis=2)[..., 0] / np.float32(-32)                  # (n, 16) signed
    s_max = np.take_along_axis(s, np.abs(s).argmax(axis=1)[:, None], axis=1)         # (n, 1)
    d = np.where(s_max == 0, 0, s_max / np.float32(-128)).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.minimum(127, np.rint(np.where(d == 0, 0, s / d.astype(np.float32)))).astype(np.int8)
        step = d.astype(np.float32) * scales                                             # (n, 16)
        q = np.where(step[..., None] == 0, 0, np.rint(sub / step[..., None]))
    codes = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)         # (block, half, quarter, 32)
    low, high = codes & 0x0F, codes >> 4
    ql = (low[:, :, 0:2] | (low[:, :, 2:4] << 4)).reshape(n, 128)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(n, 64)
    return np.concatenate([ql, qh, scales.view(np.uint8), d.view(np.uint8)], axis=1)


def random_table(shape, rng, storage="bf16", rows=4096):
    """A random (V, C) N(0, 0.02²) table as a checkpoint stores it, drawn ``rows`` rows at a time (the float32
    table never exists whole), as a ``FrozenTable``: ``storage`` "bf16": a bf16 checkpoint's words, as
    ``load_model`` keeps a bf16 file's table under NF4 (io/hf_checkpoint.py's ``frozen_tables``); "Q6_K":
    llama.cpp's blocks, as its quantizer stores a tied token table of width a multiple of 256 (``q6_k_blocks``)
    and ``load_model(gguf file, quantize="gguf")`` keeps them."""
    from lora_np.quant.bf16 import Bf16Weight, bf16_words
    from lora_np.quant.gguf_weight import GGUFWeight
    from lora_np.quant.table import FrozenTable
    q6_k = storage == "Q6_K"
    store = np.empty((shape[0], shape[1] // 256 * 210) if q6_k else shape, np.uint8 if q6_k else np.uint16)
    for r in range(0, shape[0], rows):
        values = rng.standard_normal((min(rows, shape[0] - r), shape[1]), np.float32) * np.float32(0.02)
        store[r:r + rows] = (q6_k_blocks(values.reshape(-1, 256)).reshape(len(values), -1) if q6_k
                             else bf16_words(values))
    return FrozenTable(GGUFWeight("Q6_K", store, shape[::-1]) if q6_k else Bf16Weight(store, shape[::-1]))


def scale_model(name, base, layers):
    """SCALE_MODELS[name] with ``layers`` layers (None: all of them) and random weights (N(0, 0.02²), norms 1,
    biases 0), built tensor by tensor as ``load_model`` reads a file: under a 4-bit ``base`` each Linear weight
    is drawn, quantized (NF4 with double quantization, or a GGUF type such as "gguf:Q4_0") and dropped, so the
    float32 model never exists. The tied embedding / head is kept as the model's file holds it: under NF4 as
    the bf16 words of a bf16 checkpoint, as the hub ships these models and ``load_model(..., quantize="nf4")``
    keeps them; under a GGUF base as Q6_K blocks, the type llama.cpp's quantizer (``llama_tensor_get_type``:
    the output tensor, or the token table when tied, is Q6_K unless its width is not a multiple of 256, then
    Q8_0) gives both models' tables whatever the layers' type (``random_table``)."""
    import lora_np
    from lora_np.io.quantized_load import fill_quantized
    from lora_np.models.llama import Llama, LlamaConfig
    from lora_np.quant.gguf_weight import GGUFWeight
    config = LlamaConfig(**{**SCALE_MODELS[name], "num_hidden_layers": scale_layers(name, layers)})
    lora_np.manual_seed(0)
    if base == "float32":
        return Llama(config)
    model, rng = Llama(config, empty=True), np.random.default_rng(0)
    shapes = {n: p.shape for n, p in model.named_parameters()}

    def read(n):
        fill = {"weight": np.ones, "bias": np.zeros}[n.rpartition(".")[2]] if "norm" in n or "bias" in n else None
        return fill(shapes[n], np.float32) if fill else rng.standard_normal(shapes[n], np.float32) * np.float32(0.02)

    gguf_type = base.partition(":")[2] or None

    def table(n):
        storage = "Q6_K" if gguf_type else "bf16"
        return random_table(shapes[n], rng, storage) if n == "model.embed_tokens.weight" else None

    linear = (lambda n: GGUFWeight.from_float(read(n), gguf_type)) if gguf_type else None
    return fill_quantized(model, "", read, ("nf4", 64, True, np.float32), linear, table)


def scale_train(case):
    ours_lora_train(lambda: scale_model(case["model"], case["base"], case["layers"]), PROJECTIONS, LORA_R,
                    tokens(SCALE_MODELS[case["model"]]["vocab_size"], *SCALE_SHAPE), checkpointing=True)


WORKERS = {"ours_train": ours_train, "peft_train": peft_train, "ours_generate": ours_generate,
           "hf_generate": hf_generate, "scale_train": scale_train}


# ---- the driver ---------------------------------------------------------------------------------
BF16_TRAIN = {"ours_bf16": dict(kind="ours_train", base="bf16"), "ours_f32": dict(kind="ours_train"),
              "peft_f32": dict(kind="peft_train"), "peft_bf16": dict(kind="peft_train", torch_dtype="bfloat16")}
BF16_GENERATE = {f"{side}_{mode}": dict(kind=kind, base=base, sample=mode == "sampled")
                 for side, kind, base in (("ours_bf16", "ours_generate", "bf16"), ("ours_f32", "ours_generate", None),
                                          ("hf_f32", "hf_generate", None)) for mode in ("greedy", "sampled")}


def run_model_bf16(name, args):
    """``--bf16``: a bfloat16 checkpoint, the four training sides in turn, then the generation runs."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, name, bf16=True)
        case = {"checkpoint": tmp, "shape": MODELS[name]["shape"], "model": name}
        sides = {side: {**case, **c} for side, c in BF16_TRAIN.items()}
        peft_bf16 = sides.pop("peft_bf16")  # torch's bf16 matmuls are many times slower on a CPU without bf16 units:
        out["train"] = interleaved(__file__, sides, args.warmup, args.steps)
        out["train"].update(interleaved(__file__, {"peft_bf16": peft_bf16}, 0, 1))  # one step, for its memory
        print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "step_cpu_ms")}
                                for k, v in out["train"].items()}), flush=True)
        out["generate"] = {}
        for side, c in BF16_GENERATE.items() if not args.train_only else ():
            out["generate"][side] = run_once(__file__, {**case, **c, "repeats": args.repeats,
                                                        "new_tokens": args.new_tokens}, timeout=1800)
            print(name, side, json.dumps(out["generate"][side]), flush=True)
    return out


def decode_sides(args):
    """``--decode``'s sides: lora_np and transformers, greedy and sampled; (``--baseline``) lora_np before, greedy."""
    sides = {f"{side}_{mode}": {"kind": kind, "sample": mode == "sampled"}
             for side, kind in (("ours", "ours_generate"), ("transformers", "hf_generate"))
             for mode in ("greedy", "sampled")}
    if args.baseline:
        sides["ours_before_greedy"] = dict(kind="ours_generate", root=str(Path(args.baseline).resolve()))
    return sides


def run_decode(name, args):
    """``--decode``: generation alone, float32 checkpoint, ``--repeats`` rounds of every side; per side,
    the median of each number over the rounds and the rounds themselves."""
    sides, runs = decode_sides(args), {}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, name)
        case = {"checkpoint": tmp, "model": name, "repeats": 1, "new_tokens": args.new_tokens}
        for _ in range(args.repeats):
            for side, c in sides.items():
                runs.setdefault(side, []).append(run_once(__file__, {**case, **c}, timeout=1800))
                print(name, side, json.dumps(runs[side][-1]), flush=True)
    return {side: {**{key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}, "rounds": rounds}
            for side, rounds in runs.items()}


def run_model(name, args):
    """One model: its checkpoint, the interleaved training pair, then (unless --train-only) the two
    generation runs."""
    if args.decode:
        return run_decode(name, args)
    if args.bf16:
        return run_model_bf16(name, args)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, name)
        out["train"] = train_pair(__file__, {"checkpoint": tmp, "shape": MODELS[name]["shape"], "model": name},
                                  args.warmup, args.steps)
        print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "train_peak_rss_mb")}
                                for k, v in out["train"].items()}), flush=True)
        if args.train_only:
            return out
        out["generate"] = {kind: run_once(__file__, {"kind": kind, "checkpoint": tmp, "repeats": args.repeats,
                                                     "model": name})
                           for kind in ("ours_generate", "hf_generate")}
        print(name, "generate", json.dumps(out["generate"]), flush=True)
    return out


MEMORY_FIXED_GIB = 4.5  # both training sides' memory besides two copies of the float32 weights (270M: 6.2 GiB in all)


def mem_available_gib():
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable:")) / 2 ** 20


def enough_memory(name, results, wait_s=600):
    """Whether MemAvailable holds both training sides of ``name`` (two copies of its float32 weights and
    MEMORY_FIXED_GIB), waiting up to ``wait_s`` for it; if not, the model is skipped and ``results["skipped"]``
    says why (on a shared machine a worker killed for memory may take someone else's process with it)."""
    family, config = native_config(name)
    need = 2 * 4 * family.parameter_count(config) / 2 ** 30 + MEMORY_FIXED_GIB
    deadline = time.monotonic() + wait_s
    while mem_available_gib() < need and time.monotonic() < deadline:
        time.sleep(10)
    if mem_available_gib() < need:
        results.setdefault("skipped", {})[name] = f"needs ~{need:.1f} GiB, MemAvailable was {mem_available_gib():.1f}"
        print(name, "skipped:", results["skipped"][name], flush=True)
    return name not in results.get("skipped", {})


def timed_cpu_ms(side):
    """The median CPU time (process_time, all threads) of a side's timed steps, warm-up left out."""
    return float(np.median(side["step_cpu_ms"][-len(side["times_ms"]):]))


def report(results, seconds):
    lines = ["| | lora_np | transformers + PEFT | ratio | target |", "|---|---|---|---|---|"]
    names, stem, description = FAMILIES[results["family"]]
    for name in (n for n in names if results.get(n)):
        t, b = MODELS[name]["shape"]
        ours, peft = results[name]["train"]["ours_train"], results[name]["train"]["peft_train"]
        generated = results[name].get("generate", {})
        rows = [(f"{name}: LoRA step, T {t} × B {b} (ms, median)", ours["ms"], peft["ms"], "≤ 0.90", ".0f"),
                (f"{name}: LoRA step's CPU time, all threads (ms, median)", timed_cpu_ms(ours), timed_cpu_ms(peft),
                 "", ".0f"),
                (f"{name}: peak RSS (MiB, whole process)", ours["peak_rss_mb"], peft["peak_rss_mb"], "≤ 0.50", ".0f"),
                (f"{name}: peak RSS of the training steps (MiB)", ours["train_peak_rss_mb"],
                 peft["train_peak_rss_mb"], "", ".0f")]
        if generated:
            rows.append((f"{name}: greedy generation, {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} (tokens/s)",
                         generated["ours_generate"]["tokens_per_s"], generated["hf_generate"]["tokens_per_s"],
                         "≥ 1.0", ".1f"))
        lines += [f"| {label} | {a:,{fmt}} | {b_:,{fmt}} | {a / b_:.2f} | {target} |"
                  for label, a, b_, target, fmt in rows]
    import torch
    return "\n".join([
        f"# The {dict(llama='Llama', gemma3='Gemma 3')[results['family']]} family at real shapes: "
        "lora_np vs transformers + PEFT",
        "",
        f"{description}, tied heads, float32; LoRA r=16 (α=32) on every projection, AdamW; one checkpoint "
        "written by transformers and loaded by both; the same tokens. Step: median of "
        f"{results['steps']} after {results['warmup']} warm-up, the two sides stepping in turn.",
        f"Machine: {machine_description()}, torch {torch.__version__}; {THREADS} threads per process, "
        f"OMP_WAIT_POLICY=PASSIVE. {time.strftime('%Y-%m-%d')}, one run ({seconds:.0f} s), load average (1 min) "
        f"{results['load']} at the start and after each model (a 2-core machine shared with other "
        "work: expect ±10-20% and more when the load exceeds 2; the steps' CPU time, all threads' process_time, "
        "is the steadier measure there).",
        "",
        *lines,
        *[f"\nNot measured: {name} ({why}).\n" for name, why in results.get("skipped", {}).items()],
        "",
        f"Command: `{results['command']}`",
        "",
    ])


def report_bf16(results, seconds):
    """The --bf16 tables: memory and step time of the four training sides, then generation."""
    lines = ["| model | side | step (ms, median) | step CPU (ms, median) | peak RSS (MiB) | RSS / PEFT f32 | "
             "RSS / PEFT bf16 | step / ours f32 |", "|---|---|---|---|---|---|---|---|"]
    gen = ["| model | side | greedy tokens/s (wall) | greedy tokens per CPU-s | sampled tokens/s | "
           "sampled tokens per CPU-s | prefill ms (CPU ms) | × transformers f32 (greedy, wall / CPU) |",
           "|---|---|---|---|---|---|---|---|"]
    for name in (n for n in MODELS if results.get(n)):
        train, g = results[name]["train"], results[name]["generate"]
        for side, r in train.items():
            lines.append(f"| {name} | {side} | {r['ms']:,.0f} | {np.median(r['step_cpu_ms']):,.0f} | "
                         f"{r['peak_rss_mb']:,.0f} | {r['peak_rss_mb'] / train['peft_f32']['peak_rss_mb']:.2f} | "
                         f"{r['peak_rss_mb'] / train['peft_bf16']['peak_rss_mb']:.2f} | "
                         f"{r['ms'] / train['ours_f32']['ms']:.2f} |")
        hf = g.get("hf_f32_greedy")
        for side in ("ours_bf16", "ours_f32", "hf_f32") if hf else ():
            a, b = g[f"{side}_greedy"], g[f"{side}_sampled"]
            gen.append(f"| {name} | {side} | {a['tokens_per_s']:.2f} | {a['tokens_per_cpu_s']:.2f} | "
                       f"{b['tokens_per_s']:.2f} | {b['tokens_per_cpu_s']:.2f} | {a['prefill_ms']:.0f} "
                       f"({a['prefill_cpu_ms']:.0f}) | {a['tokens_per_s'] / hf['tokens_per_s']:.2f} / "
                       f"{a['tokens_per_cpu_s'] / hf['tokens_per_cpu_s']:.2f} |")
    import torch
    return "\n".join([
        "# The Llama family from bfloat16 checkpoints: a bf16 frozen base against float32 and PEFT", "",
        "Random weights at SmolLM2-135M's and Qwen3-0.6B's shapes written by transformers in bfloat16; LoRA r=16 "
        "(α=32) on every projection, AdamW. `ours_bf16`: `load_model(path, quantize=\"bf16\")` (Linear weights "
        "and the token embedding / LM head kept as bf16 words, widened band by band); "
        "`ours_f32`: the same values widened at load; `peft_f32` / "
        "`peft_bf16`: transformers + PEFT with `dtype=torch.float32` / `torch.bfloat16` (no autocast).",
        f"Machine: {machine_description()}, torch {torch.__version__}; {THREADS} threads per process, "
        f"OMP_WAIT_POLICY=PASSIVE. {time.strftime('%Y-%m-%d')}, one run ({seconds:.0f} s), load average "
        f"{results['load']} before and after. Step CPU time is all threads' (process_time): on a machine "
        "shared with other work it is the steadier measure.", "",
        "## LoRA training step", "", *lines, "",
        *([f"## Generation: {PROMPT_TOKENS}-token prompt + {results.get('new_tokens', NEW_TOKENS)} new tokens, KV "
           "cache (sampled: temperature 1, top-k 50)", "", *gen, ""] if len(gen) > 2 else []),
        f"Command: `python benchmarks/bench_llm.py --bf16 {results.get('flags', '--new-tokens 128')}`", ""])


def report_decode(results, seconds):
    """The --decode table: tokens/s (wall and per CPU second) of each side, prefill, the ratios."""
    lines = ["| model | side | greedy tokens/s | greedy tokens per CPU-s | sampled tokens/s | sampled tokens per "
             "CPU-s | prefill ms (CPU ms) | greedy × transformers (wall / CPU) | sampled × transformers (wall) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in (n for n in MODELS if results.get(n)):  # a model skipped for memory has {}
        r = results[name]
        hf_g, hf_s = r["transformers_greedy"], r["transformers_sampled"]
        for side in ("ours", "ours_before", "transformers"):
            if f"{side}_greedy" not in r:
                continue
            g, s = r[f"{side}_greedy"], r.get(f"{side}_sampled")
            sampled = (f"{s['tokens_per_s']:.2f} | {s['tokens_per_cpu_s']:.2f}" if s else "– | –")
            sampled_ratio = f"{s['tokens_per_s'] / hf_s['tokens_per_s']:.2f}" if s else "–"
            lines.append(f"| {name} | {side} | {g['tokens_per_s']:.2f} | {g['tokens_per_cpu_s']:.2f} | {sampled} | "
                         f"{g['prefill_ms']:.0f} ({g['prefill_cpu_ms']:.0f}) | "
                         f"{g['tokens_per_s'] / hf_g['tokens_per_s']:.2f} / "
                         f"{g['tokens_per_cpu_s'] / hf_g['tokens_per_cpu_s']:.2f} | "
                         f"{sampled_ratio} |")
    import torch
    return "\n".join([
        "# Decoding: lora_np against transformers' `generate` (issue 36 item 2)", "",
        f"Random float32 weights at SmolLM2-135M's and Qwen3-0.6B's shapes, written by transformers; a {PROMPT_TOKENS}-"
        f"token prompt and {results['new_tokens']} new tokens with the KV cache, greedy and sampled (temperature 1, "
        "top-k 50); prefill: the prompt and one token. `ours_before`: lora_np of the checkout given by --baseline "
        "(greedy only), the same harness. Each side in its own process; the sides take turns, round after round; "
        f"medians over {results['rounds']} rounds.",
        f"Machine: {machine_description()}, torch {torch.__version__}; {THREADS} threads per process "
        f"(LORA_NP_NUM_THREADS, OMP/OPENBLAS/MKL_NUM_THREADS, torch.set_num_threads), OMP_WAIT_POLICY=PASSIVE. "
        f"{time.strftime('%Y-%m-%d %H:%M')}, one run ({seconds:.0f} s), load average {results['load']} "
        "before and after (tokens per CPU-second are the steadier measure on a shared machine).", "",
        *lines, "", "Target: greedy tokens/s ≥ 2.0 × transformers'; prefill at most transformers'.", "",
        f"Command: `{results['command']}` (a `--baseline DIR` side is an earlier checkout: `git archive REV | "
        "tar -x -C DIR`)", ""])


PROFILE_GROUPS = (("bf16 widening", lambda f, fn: fn in ("widen_bf16", "rows", "band")),
                  ("BLAS GEMMs of the Linear layers", lambda f, fn: fn in ("gemm_kernel", "output_band", "input_band")),
                  ("fused LM head + loss (its GEMMs, exp)", lambda f, fn: fn in ("logsumexp_pass", "chunk_loss")),
                  ("attention", lambda f, fn: "attention" in f or "cache" in f),
                  ("norm, RoPE, SwiGLU kernels", lambda f, fn: fn.endswith("_kernel") or fn == "sigmoid_into"),
                  ("NumPy calls (reshape, copies, ufuncs)", lambda f, fn: f == "~"),
                  ("Python: op wrappers, modules, autograd", lambda f, fn: True))


def print_profile(title, profiler, plain_cpu, steps, unit):
    """The profile's CPU time per ``unit``, grouped by PROFILE_GROUPS, after ``plain_cpu`` (unprofiled)."""
    import pstats
    stats, groups = pstats.Stats(profiler).stats, dict.fromkeys([label for label, _ in PROFILE_GROUPS], 0.0)
    for (f, _, fn), (_, calls, tottime, _, _) in stats.items():
        groups[next(label for label, test in PROFILE_GROUPS if test(f, fn))] += tottime
    total, calls = sum(groups.values()), sum(v[1] for v in stats.values())
    print(f"{title}: {1000 * plain_cpu / steps:.1f} ms CPU per {unit} (one thread, unprofiled); "
          f"{calls / steps:,.0f} Python calls per {unit}; profiled {1000 * total / steps:.1f} ms:")
    for label, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {label}: {1000 * t / steps:.1f} ms ({100 * t / total:.0f}%)")


def profile_decode(name, base, steps=16):
    """``--profile-decode``: ``steps`` decode steps after a 16-token prompt, random weights at the model's
    shape, on ONE thread (cProfile sees only the main thread; run with OPENBLAS_NUM_THREADS=1), timed by
    CPU time; prints the CPU ms per token unprofiled, Python calls per token and the profiled share of
    each kind of work (the profiler inflates the Python share: every call pays its overhead)."""
    import cProfile
    import lora_np
    from lora_np.models.llama import Llama, LlamaConfig
    from lora_np.parallel import matmul, single_threaded_blas
    cfg = dict(MODELS[name]["config"])
    cfg.update(qk_norm=True, model_type="qwen3") if MODELS[name]["kind"] == "qwen3" else None
    lora_np.manual_seed(0)
    model = Llama(LlamaConfig(**cfg)).eval()
    if base == "bf16":
        lora_np.quantize_model(model, "bf16")
    prompt = tokens(cfg["vocab_size"], PROMPT_TOKENS, 1)[0]
    profiler = cProfile.Profile(time.process_time)

    def run(profile):
        cache = lora_np.models.KVCache(PROMPT_TOKENS + steps)
        with lora_np.no_grad(), single_threaded_blas():
            model.hidden_states(prompt, cache=cache)
            ids, cpu = prompt[:, -1:], time.process_time()
            profiler.enable() if profile else None
            for _ in range(steps):
                ids = matmul(model.hidden_states(ids, cache=cache).data[:, -1], model.head_weight.data.T).argmax(-1)
                ids = ids[:, None]
            profiler.disable() if profile else None
            return time.process_time() - cpu

    run(False)
    plain, _ = run(False), run(True)
    print_profile(f"{name}, {base} base", profiler, plain, steps, "token")
    if base == "float32":
        print_gemv_floor(model, plain / steps)


def print_gemv_floor(model, step_cpu):
    """The floor of a decode step: one pass of GEMVs, (1, in) @ W through ``parallel.matmul`` as the model
    runs them (split across LORA_NP_NUM_THREADS as gemm_split says), over every Linear weight and the head:
    each weight read once from memory, as a step reads it. Timed by CPU time, as the step, and by wall
    time (with several threads, the split's gain); the step's CPU time beyond it is Python, the small
    kernels and attention."""
    from lora_np.parallel import matmul, single_threaded_blas
    weights = [m.weight.data for _, m in model.named_modules() if type(m).__name__ == "Linear"]
    head = model.head_weight.data
    xs, h = [np.ones((1, w.shape[0]), w.dtype) for w in weights], np.ones((1, head.shape[1]), head.dtype)

    def one_pass():
        for x, w in zip(xs, weights):
            matmul(x, w)
        matmul(h, head.T)  # as the generate loop computes the logits

    with single_threaded_blas():
        one_pass()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(4):
            one_pass()
        cpu, wall = (time.process_time() - cpu) / 4, (time.perf_counter() - wall) / 4
    nbytes = sum(w.nbytes for w in weights) + head.nbytes
    print(f"  floor: GEMVs over all {nbytes / 1e6:,.0f} MB of weights {1000 * cpu:.1f} ms CPU, "
          f"{1000 * wall:.1f} ms wall per token ({nbytes / wall / 1e9:.1f} GB/s); the step's {1000 * step_cpu:.1f} ms "
          f"CPU is {step_cpu / cpu:.2f}x it, {1000 * (step_cpu - cpu):.1f} ms beyond it")


def profile_train(name, base, steps=2, top=25):
    """``--profile-train``: LoRA training steps (as ``ours_train``: T × B of the model's case, r=16 on every
    projection, AdamW) on ONE thread, timed and profiled by CPU time as ``profile_decode``. ``base``:
    ``float32`` or ``bf16``, a bf16 checkpoint loaded with its base widened or kept in bf16, printed grouped
    as ``profile_decode`` does; ``random``, lora_np's own model with random weights (no checkpoint, any
    family), printed as the ``top`` functions by own time: a NumPy operator (``@``, ``*``) is no call to
    cProfile, so an op's arithmetic counts in the function that runs it (its forward, or its backward closure)."""
    import cProfile
    import pstats
    import lora_np
    from lora_np.optim import AdamW
    from lora_np.parallel import single_threaded_blas
    if base == "random":
        model = native_model(name).train()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            make_checkpoint(tmp, name, bf16=True)
            model = _ours_load({"checkpoint": tmp, "base": base}).train()
    lora_np.add_lora(model, lora_np.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=PROJECTIONS))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = tokens(MODELS[name]["config"]["vocab_size"], *MODELS[name]["shape"])
    profiler = cProfile.Profile(time.process_time)

    def run(profile):
        with single_threaded_blas():
            cpu = time.process_time()
            profiler.enable() if profile else None
            for _ in range(steps):
                model(x, y)[1].backward()
                opt.step()
                opt.zero_grad()
            profiler.disable() if profile else None
            return time.process_time() - cpu

    run(False)
    plain, profiled = run(False), run(True)
    if base != "random":
        return print_profile(f"{name}, {base} base, LoRA step", profiler, plain, steps, "step")
    print(f"{name}: LoRA step T {MODELS[name]['shape'][0]} x B {MODELS[name]['shape'][1]}: "
          f"{1000 * plain / steps:,.0f} ms CPU (one thread, unprofiled), {1000 * profiled / steps:,.0f} ms profiled")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def _saved_arrays(obj, found, seen, depth=0):
    """The arrays a backward closure holds (through its cells, tuples and nested closures), by the buffer
    each one views: {id(buffer): bytes}."""
    import types
    if depth > 4 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        while isinstance(obj.base, np.ndarray):
            obj = obj.base
        found[id(obj)] = obj.nbytes
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _saved_arrays(item, found, seen, depth + 1)
    elif isinstance(obj, types.FunctionType):
        for cell in obj.__closure__ or ():
            try:
                _saved_arrays(cell.cell_contents, found, seen, depth + 1)
            except ValueError:  # an empty cell
                pass


def profile_memory(name, base):
    """``--profile-memory``: what one LoRA step (as ``ours_train``, random weights, no checkpoint) holds for
    its backward. After a warm step (AdamW's state exists), the next step's graph is walked once its loss is
    formed: every array its backward closures hold, each buffer counted once, for the first op that holds it,
    summed by op (the LoRA parameters A, B are counted too, under ``matmul`` / ``lora_linear``); then the
    step's tracemalloc peak (NumPy reports its buffers to tracemalloc) above what was allocated before it.
    ``base``: ``float32``, or ``bf16`` (``quantize_model(..., "bf16")`` and the tied table as bf16 words, as
    ``load_model(path, quantize="bf16")`` holds a bf16 checkpoint)."""
    import collections
    import tracemalloc
    import lora_np
    from lora_np.autograd import _topological_order
    from lora_np.optim import AdamW
    from lora_np.quant.bf16 import Bf16Weight
    from lora_np.quant.table import FrozenTable
    model = native_model(name)
    if base == "bf16":
        lora_np.quantize_model(model, "bf16")
        embed = model.model.embed_tokens
        embed.weight = FrozenTable(Bf16Weight.from_float(embed.weight.data.T))
    lora_np.add_lora(model.train(), lora_np.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=PROJECTIONS))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = tokens(MODELS[name]["config"]["vocab_size"], *MODELS[name]["shape"])

    def step(census=None):
        _, loss = model(x, y)
        if census is not None:
            owner = {}
            for node in _topological_order(loss._node):
                found = {}
                _saved_arrays(node.backward, found, set()) if node.leaf is None else None
                for buffer, nbytes in found.items():
                    if buffer not in owner:
                        owner[buffer] = node.op
                        census[node.op] += nbytes
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    census = collections.Counter()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    step(census)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    t, b = MODELS[name]["shape"]
    print(f"{name}, {base} base, LoRA step T {t} x B {b}: the graph holds {sum(census.values()) / 2 ** 20:.1f} MiB "
          f"for the backward once the loss is formed; the step's peak is {peak / 2 ** 20:.1f} MiB above its start")
    for op, nbytes in census.most_common():
        print(f"  {op}: {nbytes / 2 ** 20:.1f} MiB")


def native_config(name):
    """(family, config): lora_np's config for ``MODELS[name]``, read from the fields transformers' config
    takes (the family's ``config_from_hf``, as from a config.json)."""
    from lora_np.models.registry import family_for_type
    spec = MODELS[name]
    family = family_for_type({"gemma3": "gemma3_text"}.get(spec["kind"], spec["kind"]))
    return family, family.config_from_hf({**spec["config"], "model_type": family.model_types[0]})


def native_model(name):
    """lora_np's own model at ``MODELS[name]``'s shape, random weights, without a checkpoint."""
    import lora_np
    family, config = native_config(name)
    lora_np.manual_seed(0)
    return family.model_class(config)


def run_scale(args, start):
    """``--scale``: each SCALE_MODELS shape at ``--layers`` layers, its bases stepping in turn (T 512 x B 1,
    LoRA r=16 on every projection, checkpointing); writes ``--out`` (default results_scale) after each model,
    so that a long full-depth run keeps what it has measured."""
    results = {"load": [round(os.getloadavg()[0], 1)], "layers": args.layers,
               "date": time.strftime("%Y-%m-%d %H:%M UTC"),
               "command": " ".join(["python benchmarks/bench_llm.py", *sys.argv[1:]])}
    for name in SCALE_MODELS:
        sides = {base: {"kind": "scale_train", "model": name, "base": base, "layers": args.layers}
                 for base in args.bases}
        results[name] = interleaved(__file__, sides, args.warmup, args.steps)
        print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "train_peak_rss_mb")}
                                for k, v in results[name].items()}), flush=True)
        finish(args, results, start, report_scale)
    return results


def report_scale(results, seconds):
    t, b = SCALE_SHAPE
    lines = ["| model | layers | base | step (ms, median) | step CPU (ms, median) | tokens/s | peak RSS (MiB) | "
             "peak RSS of the steps (MiB) | step / float32 |", "|---|---|---|---|---|---|---|---|---|"]
    for name in (n for n in SCALE_MODELS if n in results):
        f32 = results[name].get("float32")
        for base, r in results[name].items():
            ratio = f"{r['ms'] / f32['ms']:.2f}" if f32 else "(float32 not run)"
            lines.append(f"| {name} | {scale_layers(name, results['layers'])} | {base} | {r['ms']:,.0f} | "
                         f"{np.median(r['step_cpu_ms']):,.0f} | {1000 * t * b / r['ms']:.1f} | "
                         f"{r['peak_rss_mb']:,.0f} | {r['train_peak_rss_mb']:,.0f} | {ratio} |")
    return "\n".join([
        "# A 4-bit frozen base at Qwen2.5-1.5B's and Llama-3.2-1B's shapes", "",
        "Random weights built in memory (no checkpoint), real widths and vocabularies, "
        f"{'every layer' if results['layers'] is None else str(results['layers']) + ' layers'}; "
        f"T {t} x B {b}, LoRA r={LORA_R} (α={2 * LORA_R}) on every projection, AdamW, gradient checkpointing. "
        "nf4: NF4 with double quantization, the tied embedding / LM head kept as a bf16 checkpoint's words (a "
        "FrozenTable, as `load_model(..., quantize=\"nf4\")` keeps a bf16 folder's); gguf:Q4_0: llama.cpp's Q4_0 "
        "blocks, the tied table in Q6_K blocks as llama.cpp's quantizer stores it (`llama_tensor_get_type`: Q6_K for a "
        "width that is a multiple of 256), decoded band by band by lora_np's Q6_K decoder; float32: all float32.",
        f"Machine: {machine_description()}; {THREADS} threads per process, the bases stepping in turn. "
        f"{results['date']}, one run ({seconds:.0f} s), load average {results['load']} before and after "
        "(a 2-core machine shared with other work: wall times move with the load; step CPU is all threads').", "",
        *lines, "",
        f"Command: `{results.get('command', 'python benchmarks/bench_llm.py --scale')}`", ""])


def _scale_split(stats):
    """CPU seconds of a profiled step by kind: decoding the 4-bit tiles (``band``: codes -> floats, with
    the absmax), widening the frozen table's bands (``FrozenTable.band``: bf16 words or Q6_K blocks, for the
    head and its backward), the Linear layers' GEMMs (on the tiles; whole for float32), the LM head with its
    loss (its own time, without the table's widening), the rest. A table's storage decodes through the same
    ``band`` functions as the Linear weights: those calls count as the table's, once."""
    split = dict.fromkeys(("dequantize (band)", "table (widen)", "Linear GEMMs", "LM head + loss", "rest"), 0.0)
    for (f, _, fn), (_, _, tottime, cumtime, callers) in stats.items():
        if fn == "band" and f.endswith("table.py"):
            split["table (widen)"] += cumtime
        elif fn == "band" and "quant" in f:
            split["dequantize (band)"] += cumtime - sum(edge[3] for caller, edge in callers.items()
                                                        if caller[0].endswith("table.py"))
        elif fn in ("output_band", "input_band", "gemm_kernel"):
            split["Linear GEMMs"] += tottime
        elif f.endswith("lm_head_loss.py"):
            split["LM head + loss"] += tottime
    split["rest"] = sum(v[2] for v in stats.values()) - sum(split.values())
    return split


def profile_scale(name, base, layers):
    """``--profile-scale``: one training step of ``scale_model`` on ONE thread under cProfile (run with
    OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1: the profiler sees only the main thread), after two unprofiled
    steps; returns the CPU seconds per step and its split (``_scale_split``)."""
    import cProfile
    import pstats
    import lora_np
    from lora_np.optim import AdamW
    lora_np.parallel.tune_host_allocator()
    model = scale_model(name, base, layers).train()
    lora_np.add_lora(model, lora_np.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=PROJECTIONS))
    model.gradient_checkpointing_enable()
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = tokens(SCALE_MODELS[name]["vocab_size"], *SCALE_SHAPE)

    def step():
        model(x, y)[1].backward()
        opt.step()
        opt.zero_grad()

    step()
    cpu = time.process_time()
    step()
    plain, profiler = time.process_time() - cpu, cProfile.Profile(time.process_time)
    profiler.runcall(step)
    split = _scale_split(pstats.Stats(profiler).stats)
    total = sum(split.values())
    print(f"{name}, {base}, {scale_layers(name, layers)} layers: {plain:.2f} CPU s per step unprofiled; "
          f"profiled {total:.2f} s: " +
          ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in split.items()), flush=True)
    return {"model": name, "base": base, "layers": layers, "cpu_s": plain, "split_s": split,
            "load": round(os.getloadavg()[0], 1), "date": time.strftime("%Y-%m-%d %H:%M UTC")}


def write_scale_profile(rows, out=HERE / "results_scale_profile"):
    """The ``--profile-scale`` rows as a table, added to ``out``.md (and the raw rows to ``out``.json)."""
    lines = [f"| {r['model']} | {r['layers']} | {r['base']} | {r['cpu_s']:.2f} | " +
             " | ".join(f"{v:.2f} s ({100 * v / sum(r['split_s'].values()):.0f}%)" for v in r["split_s"].values()) +
             f" | {r['load']} | {r['date']} |" for r in rows]
    md, js = Path(str(out) + ".md"), Path(str(out) + ".json")
    if not md.exists():
        md.write_text("# Where a --scale step's CPU time goes (one thread, cProfile)\n", encoding="utf-8")
    columns = ["model", "layers", "base", "CPU s", *rows[0]["split_s"], "load", "date"]
    md.write_text(md.read_text(encoding="utf-8") + f"\n## {rows[0]['date']}\n\n"
                  f"Machine: {machine_description()}. Command: `OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1 "
                  f"{' '.join(['python benchmarks/bench_llm.py', *sys.argv[1:]])}`; "
                  "CPU s: one step unprofiled; the shares are of the profiled step.\n\n"
                  "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|\n" + "\n".join(lines) + "\n",
                  encoding="utf-8")
    js.write_text(json.dumps((json.loads(js.read_text()) if js.exists() else []) + rows, indent=1), encoding="utf-8")
    return rows


def main(argv=None):
    parser = comparison_arguments(__doc__.splitlines()[0], list(MODELS), HERE / "results_llm",
                                  steps=5, warmup=1, repeats=2)
    parser.add_argument("--family", choices=list(FAMILIES), default="llama",
                        help="the models to measure (gemma3: writes benchmarks/results_llm_gemma3.md)")
    parser.add_argument("--train-only", action="store_true", help="no generation runs")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 checkpoints: bf16 and float32 bases, PEFT both")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="tokens generated per timed run")
    parser.add_argument("--decode", action="store_true", help="generation only: lora_np against transformers")
    parser.add_argument("--baseline", metavar="DIR", help="with --decode: an earlier checkout's lora_np as a side")
    parser.add_argument("--profile-decode", choices=("float32", "bf16"),
                        help="profile decode steps in this process (with OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1)")
    parser.add_argument("--profile-train", choices=("float32", "bf16", "random"),
                        help="profile LoRA training steps in this process (OPENBLAS_NUM_THREADS=1 "
                             "LORA_NP_NUM_THREADS=1): on a bf16 checkpoint with that base, or on random weights")
    parser.add_argument("--profile-memory", choices=("float32", "bf16"),
                        help="what a LoRA step holds for its backward, by op, and its tracemalloc peak "
                             "(in this process)")
    parser.add_argument("--scale", action="store_true", help="a 4-bit base at Qwen2.5-1.5B / Llama-3.2-1B shapes")
    parser.add_argument("--layers", type=lambda v: None if v == "full" else int(v), default=2,
                        help="--scale, --profile-scale: decoder layers, or 'full' for the model's own depth")
    parser.add_argument("--bases", nargs="+", default=list(SCALE_BASES), choices=SCALE_BASES, help="--scale's bases")
    parser.add_argument("--profile-scale", choices=list(SCALE_MODELS), help="profile one --scale step of each of "
                        "--bases in this process (OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1)")
    args = parser.parse_args(argv)
    names = args.only or FAMILIES[args.family][0]
    if args.profile_scale:
        out = HERE / "results_scale_profile" if args.out == str(HERE / "results_llm") else args.out
        return write_scale_profile([profile_scale(args.profile_scale, base, args.layers) for base in args.bases], out)
    if args.scale and not args.worker:
        args.out = str(HERE / "results_scale") if args.out == str(HERE / "results_llm") else args.out
        return run_scale(args, time.perf_counter())
    if args.profile_decode:
        return [profile_decode(name, args.profile_decode) for name in names]
    if args.profile_train:
        return [profile_train(name, args.profile_train) for name in names]
    if args.profile_memory:
        return [profile_memory(name, args.profile_memory) for name in names]
    if args.out == str(HERE / "results_llm"):
        args.out = str(HERE / ("results_llm_decode" if args.decode else "results_llm_bf16" if args.bf16
                               else FAMILIES[args.family][1]))
    if args.worker:
        return run_worker(WORKERS, args.worker)
    start = time.perf_counter()
    results = {"load": [round(os.getloadavg()[0], 1)], "family": args.family, "steps": args.steps,
               "warmup": args.warmup, "command": " ".join(["python benchmarks/bench_llm.py", *sys.argv[1:]])}
    results["new_tokens"], results["rounds"] = args.new_tokens, args.repeats
    results["flags"] = " ".join(a for a in (sys.argv[1:] if argv is None else argv) if a != "--bf16")
    for name in args.only or FAMILIES[args.family][0]:
        results[name] = run_model(name, args) if enough_memory(name, results) else {}
        finish(args, results, start, report_decode if args.decode else report_bf16 if args.bf16 else report)


if __name__ == "__main__":
    main()
