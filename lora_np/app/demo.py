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
from ..io.atomic import atomic_write_json, atomic_write_text
from ..io.gpt2_checkpoint import save_gpt2
from ..lora import LoraConfig, add_lora, count_parameters, disable_lora, save_adapter
from ..models import GPT, GPTConfig
from ..training import TrainConfig, evaluate, train
from .report import format_table, plot_results


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


def _costs(model, result):
    return {"trainable": count_parameters(model)[0], "optimizer_state_bytes": result.optimizer_state_bytes,
            "peak_memory_bytes": result.peak_memory_bytes, "ms_per_step": result.ms_per_step,
            "history": result.history}


class _Demo:
    """The demo's three runs and the rank sweep, each a method; ``results`` collects what they measure."""

    def __init__(self, out, settings, seed, quiet):
        s = self.s = settings
        self.out, self.seed, self.quiet = out, seed, quiet
        self.task_a = task_dataset("copy", s.block_size, seed=seed)
        self.task_b = task_dataset("shift", s.block_size, seed=seed + 1)
        self.config = GPTConfig(vocab_size=self.task_a.tokenizer.vocab_size, block_size=s.block_size,
                                n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd)
        self.results = {"settings": asdict(s), "quick": s == DemoSettings.quick(), "backend": backend.get_backend(),
                        "seed": seed, "machine": {"cpu_count": _usable_cores()}}

    def say(self, message):
        if not self.quiet:
            print(message, flush=True)

    def steps_config(self, steps, lr, warmup=TrainConfig.warmup_steps, **kw):
        return TrainConfig(steps=steps, lr=lr, batch_size=self.s.batch_size, warmup_steps=min(warmup, steps),
                           eval_every=self.s.eval_every, seed=self.seed, **kw)

    def pretrain(self):
        s = self.s
        backend.manual_seed(self.seed)
        base = GPT(self.config)
        n_params = count_parameters(base)[1]
        self.say(f"[1/3] pretraining a {n_params:,}-parameter GPT on task A (copy, 'cafe>cafe') for "
                 f"{s.pretrain_steps} steps")
        pre = train(base, self.task_a, self.steps_config(s.pretrain_steps, s.pretrain_lr, s.pretrain_warmup),
                    quiet=self.quiet)
        self.base_state = base.state_dict()
        save_gpt2(base, self.out / "base")
        self.task_a.tokenizer.save(self.out / "base")
        self.results["base"] = {"params": n_params, "pretrain_ms_per_step": pre.ms_per_step, "history": pre.history,
                                "A": evaluate(base, self.task_a), "B": evaluate(base, self.task_b),
                                "checkpoint_bytes": _dir_bytes(self.out / "base")}

    def full_finetune(self):
        s, a, b = self.s, self.task_a, self.task_b
        self.say(f"[2/3] full fine-tuning on task B (shift, 'cafe>dbgf') for {s.finetune_steps} steps")
        full, res = _fine_tune(self.base_state, self.config, b,
                               self.steps_config(s.finetune_steps, s.full_lr, memory_steps=3),
                               extra_eval=lambda m: {"A_loss": evaluate(m, a)["loss"]}, quiet=self.quiet)
        save_gpt2(full, self.out / "full_finetune")
        a.tokenizer.save(self.out / "full_finetune")
        self.results["full"] = {**_costs(full, res), "B": evaluate(full, b), "A_after": evaluate(full, a),
                                "checkpoint_bytes": _dir_bytes(self.out / "full_finetune")}

    def lora_finetune(self):
        s, a, b = self.s, self.task_a, self.task_b
        self.say(f"[3/3] LoRA fine-tuning (r={s.lora_r}, alpha={s.lora_alpha:g}, targets {','.join(s.targets)}) "
                 f"on task B")

        def lora_eval(m):
            with disable_lora(m):
                off = evaluate(m, a)["loss"]
            return {"A_loss": evaluate(m, a)["loss"], "A_loss_adapter_off": off}

        lora, res = _fine_tune(self.base_state, self.config, b,
                               self.steps_config(s.finetune_steps, s.lora_lr, memory_steps=3),
                               lora_config=LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, target_modules=s.targets),
                               extra_eval=lora_eval, quiet=self.quiet)
        save_adapter(lora, self.out / "adapter")
        after = lora.state_dict()
        with disable_lora(lora):
            a_off = evaluate(lora, a)
        self.results["lora"] = {**_costs(lora, res), "B": evaluate(lora, b), "A_after": evaluate(lora, a),
                                "A_after_adapter_off": a_off, "adapter_bytes": _dir_bytes(self.out / "adapter"),
                                "max_abs_base_weight_change": max(float(np.abs(after[k] - v).max())
                                                                  for k, v in self.base_state.items())}

    def rank_sweep(self, ranks):
        s, self.results["ranks"] = self.s, []
        for r in ranks:
            if r > s.n_embd:
                raise ValueError(f"--ranks: r={r} exceeds n_embd={s.n_embd}")
            self.say(f"      rank sweep: r={r}")
            cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=s.targets)
            m, rr = _fine_tune(self.base_state, self.config, self.task_b,
                               self.steps_config(s.finetune_steps, s.lora_lr), lora_config=cfg, quiet=True)
            self.results["ranks"].append({"r": r, "trainable": count_parameters(m)[0], "ms_per_step": rr.ms_per_step,
                                          "B": evaluate(m, self.task_b)})

    def write(self, elapsed_s):
        results, out = self.results, self.out
        results["elapsed_s"] = elapsed_s
        table = format_table(results)
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", table + "\n")
        plot_results(results, out)
        self.say("\n" + table)
        self.say(f"\nwrote {out}/results.json, results.md, loss_curves.png, costs.png"
                 + (", rank_sweep.png" if results["ranks"] else "")
                 + f"; base/, full_finetune/, adapter/ ({elapsed_s:.0f} s)")


def run_demo(out, settings, ranks=(), seed=0, quiet=False):
    """Run the whole comparison; returns the results dict (also written to out/results.json)."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    demo = _Demo(out, settings, seed, quiet)
    demo.pretrain()
    demo.full_finetune()
    demo.lora_finetune()
    demo.rank_sweep(ranks)
    demo.write(time.perf_counter() - start)
    return demo.results
