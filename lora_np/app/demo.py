"""The main job: what LoRA is for, measured.

1. Pretrain a small GPT on task A (copy: "cafe>cafe").
2. Fine-tune it on task B (shift each letter by one: "cafe>dbgf") twice, from the same base:
   full fine-tuning (every weight trains) and LoRA (r=8 adapters on c_attn, the base frozen).
3. Compare: trainable parameters, optimizer state, peak training memory, time per step, accuracy on
   B, and what is left of task A: full fine-tuning overwrote it; LoRA with the adapter switched off
   is the base, bit for bit.

Writes results.json, results.md, plots, the base checkpoint, the full fine-tune and the adapter.
"""

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import backend
from ..data import task_dataset
from .report import format_table, plot_results
from ..io.atomic import atomic_write_json, atomic_write_text
from ..io.gpt2_checkpoint import save_gpt2
from ..lora import LoraConfig, add_lora, count_parameters, disable_lora, save_adapter
from ..model import GPT, GPTConfig
from ..training import TrainConfig, evaluate, train


@dataclass
class DemoSettings:
    """The demo's model and schedule (the CLI's pretrain/finetune defaults too); the LoRA and batch
    settings are LoraConfig's and TrainConfig's own defaults."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 32
    batch_size: int = TrainConfig.batch_size
    pretrain_steps: int = 1200
    pretrain_lr: float = 3e-3
    pretrain_warmup: int = 50
    finetune_steps: int = 300
    full_lr: float = 1e-3
    lora_lr: float = 5e-3
    lora_r: int = LoraConfig.r
    lora_alpha: float = LoraConfig.lora_alpha
    targets: tuple = LoraConfig.target_modules
    eval_every: int = 25

    @classmethod
    def quick(cls):
        return cls(n_layer=2, n_head=4, n_embd=64, pretrain_steps=500, finetune_steps=150, lora_lr=1e-2,
                   eval_every=25)


def _usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix == ".safetensors")


def _fine_tune(base_state, config, data, tcfg, lora_config=None, extra_eval=None, quiet=False):
    model = GPT(config)
    model.load_state_dict(base_state)
    if lora_config is not None:
        add_lora(model, lora_config)
    else:
        model.requires_grad_(True)
    result = train(model, data, tcfg, extra_eval=extra_eval, quiet=quiet)
    return model, result


def run_demo(out, settings, ranks=(), seed=0, quiet=False):
    """Run the whole comparison; returns the results dict (also written to out/results.json)."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    start = time.perf_counter()
    s = settings
    task_a = task_dataset("copy", s.block_size, seed=seed)
    task_b = task_dataset("shift", s.block_size, seed=seed + 1)
    out.mkdir(parents=True, exist_ok=True)

    def steps_config(steps, lr, warmup=TrainConfig.warmup_steps, **kw):
        return TrainConfig(steps=steps, lr=lr, batch_size=s.batch_size, warmup_steps=min(warmup, steps),
                           eval_every=s.eval_every, seed=seed, **kw)

    config = GPTConfig(vocab_size=task_a.tokenizer.vocab_size, block_size=s.block_size, n_layer=s.n_layer,
                       n_head=s.n_head, n_embd=s.n_embd)
    backend.manual_seed(seed)
    base = GPT(config)
    n_params = count_parameters(base)[1]
    say(f"[1/3] pretraining a {n_params:,}-parameter GPT on task A (copy, 'cafe>cafe') for {s.pretrain_steps} steps")
    pre = train(base, task_a, steps_config(s.pretrain_steps, s.pretrain_lr, s.pretrain_warmup), quiet=quiet)
    base_state = base.state_dict()
    save_gpt2(base, out / "base")
    task_a.tokenizer.save(out / "base")
    results = {"settings": asdict(s), "quick": s == DemoSettings.quick(), "backend": backend.get_backend(),
               "seed": seed, "machine": {"cpu_count": _usable_cores()},
               "base": {"params": n_params, "pretrain_ms_per_step": pre.ms_per_step, "history": pre.history,
                        "A": evaluate(base, task_a), "B": evaluate(base, task_b),
                        "checkpoint_bytes": _dir_bytes(out / "base")}}

    say(f"[2/3] full fine-tuning on task B (shift, 'cafe>dbgf') for {s.finetune_steps} steps")
    full, res = _fine_tune(base_state, config, task_b, steps_config(s.finetune_steps, s.full_lr, memory_steps=3),
                           extra_eval=lambda m: {"A_loss": evaluate(m, task_a)["loss"]}, quiet=quiet)
    save_gpt2(full, out / "full_finetune")
    task_a.tokenizer.save(out / "full_finetune")
    results["full"] = {"trainable": count_parameters(full)[0], "optimizer_state_bytes": res.optimizer_state_bytes,
                       "peak_memory_bytes": res.peak_memory_bytes, "ms_per_step": res.ms_per_step,
                       "B": evaluate(full, task_b), "A_after": evaluate(full, task_a), "history": res.history,
                       "checkpoint_bytes": _dir_bytes(out / "full_finetune")}

    say(f"[3/3] LoRA fine-tuning (r={s.lora_r}, alpha={s.lora_alpha:g}, targets {','.join(s.targets)}) on task B")
    lora_cfg = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, target_modules=s.targets)

    def lora_eval(m):
        with disable_lora(m):
            off = evaluate(m, task_a)["loss"]
        return {"A_loss": evaluate(m, task_a)["loss"], "A_loss_adapter_off": off}

    lora, res = _fine_tune(base_state, config, task_b, steps_config(s.finetune_steps, s.lora_lr, memory_steps=3),
                           lora_config=lora_cfg, extra_eval=lora_eval, quiet=quiet)
    save_adapter(lora, out / "adapter")
    after = lora.state_dict()
    base_change = max(float(np.abs(after[k] - v).max()) for k, v in base_state.items())
    with disable_lora(lora):
        a_off = evaluate(lora, task_a)
    results["lora"] = {"trainable": count_parameters(lora)[0], "optimizer_state_bytes": res.optimizer_state_bytes,
                       "peak_memory_bytes": res.peak_memory_bytes, "ms_per_step": res.ms_per_step,
                       "B": evaluate(lora, task_b), "A_after": evaluate(lora, task_a), "A_after_adapter_off": a_off,
                       "history": res.history, "adapter_bytes": _dir_bytes(out / "adapter"),
                       "max_abs_base_weight_change": base_change}

    results["ranks"] = []
    for r in ranks:
        if r > s.n_embd:
            raise ValueError(f"--ranks: r={r} exceeds n_embd={s.n_embd}")
        say(f"      rank sweep: r={r}")
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=s.targets)
        m, rr = _fine_tune(base_state, config, task_b, steps_config(s.finetune_steps, s.lora_lr), lora_config=cfg,
                           quiet=True)
        results["ranks"].append({"r": r, "trainable": count_parameters(m)[0], "ms_per_step": rr.ms_per_step,
                                 "B": evaluate(m, task_b)})

    results["elapsed_s"] = time.perf_counter() - start
    table = format_table(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", table + "\n")
    plot_results(results, out)
    say("\n" + table)
    say(f"\nwrote {out}/results.json, results.md, loss_curves.png, costs.png"
        + (", rank_sweep.png" if ranks else "") + f"; base/, full_finetune/, adapter/ ({results['elapsed_s']:.0f} s)")
    return results
