"""What each CLI subcommand does (the parser lives in cli.py).

A model directory is a GPT-2 checkpoint (config.json + model.safetensors) plus char_vocab.json;
a LoRA fine-tune writes a PEFT adapter directory instead, whose safetensors metadata records the
SHA-256 of the base weights it was trained on, so it is never applied to another base by mistake.
Everything that can be checked (files, data, hyper-parameters) is checked before --out is created.
"""

import hashlib
import json
import sys
from pathlib import Path

from .. import backend
from ..io.atomic import atomic_write_json, read_json
from ..data import CharTokenizer, task_dataset, text_dataset
from .evaluate import evaluate
from ..io.gpt2_checkpoint import WEIGHTS_FILE, load_gpt2, save_gpt2
from ..lora import LoraConfig, add_lora, disable_lora, load_adapter, merge_and_unload, save_adapter
from ..lora.files import WEIGHTS_FILE as ADAPTER_WEIGHTS
from ..model import GPT, GPTConfig
from ..io.safetensors_file import read_safetensors
from .train import TrainConfig, train

RUN_CONFIG = "run_config.json"


class TrainingStopped(Exception):
    """Training ended early (NaN loss or Ctrl-C); carries the exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_dir(model_dir, adapter_dir=None):
    """(model, tokenizer) from a model directory, with a LoRA adapter applied if given."""
    model = load_gpt2(model_dir)
    tokenizer = CharTokenizer.load(model_dir)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"{model_dir}: char_vocab.json has {tokenizer.vocab_size} characters but the model's "
                         f"vocab_size is {model.config.vocab_size}")
    if adapter_dir is not None:
        _, meta = read_safetensors(Path(adapter_dir) / ADAPTER_WEIGHTS)
        expected = meta.get("base_model_sha256")
        if expected and expected != file_sha256(Path(model_dir) / WEIGHTS_FILE):
            raise ValueError(f"adapter {adapter_dir} was trained on another base model (SHA-256 of the base "
                             f"weights differs from {Path(model_dir) / WEIGHTS_FILE})")
        load_adapter(model, adapter_dir)
    return model, tokenizer


def make_dataset(args, block_size, tokenizer=None):
    if args.data:
        return text_dataset(args.data, block_size, tokenizer)
    return task_dataset(args.task, block_size, seed=args.seed, tokenizer=tokenizer)


def train_config(args, steps_default):
    return TrainConfig(steps=args.steps or steps_default, batch_size=args.batch_size, lr=args.lr,
                       warmup_steps=min(args.warmup_steps, args.steps or steps_default),
                       eval_every=args.eval_every, seed=args.seed, grad_clip=args.grad_clip)


def _restore_run_args(args):
    """With --resume, the run continues with the settings it was started with."""
    saved = read_json(Path(args.out) / RUN_CONFIG, "run configuration (needed by --resume)")
    for key, value in saved.items():
        if key not in ("resume", "quiet", "backend", "command"):
            setattr(args, key, value)
    return args


def _run_training(model, data, tcfg, args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RUN_CONFIG, {k: v for k, v in vars(args).items() if k != "func"})
    result = train(model, data, tcfg, out_dir=out, resume=args.resume, quiet=args.quiet)
    if result.status == "nan":
        raise TrainingStopped(result.message, 1)
    if result.status == "interrupted":
        raise TrainingStopped(result.message + f"; continue with --resume --out {out}", 130)
    if not args.quiet:
        last = result.history[-1] if result.history else {}
        print(f"done: {result.step} steps, {result.ms_per_step:.1f} ms/step, "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))
    return result


def cmd_pretrain(args):
    if args.resume:
        _restore_run_args(args)
    data = make_dataset(args, args.block_size)
    config = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    tcfg = train_config(args, 1000)
    backend.manual_seed(args.seed)
    model = GPT(config)
    _run_training(model, data, tcfg, args)
    save_gpt2(model, args.out)
    data.tokenizer.save(args.out)
    return 0


def cmd_finetune(args):
    if args.resume:
        _restore_run_args(args)
    model, tokenizer = load_model_dir(args.base)
    data = make_dataset(args, model.config.block_size, tokenizer)
    tcfg = train_config(args, 300)
    backend.manual_seed(args.seed)
    if args.full:
        model.requires_grad_(True)
    else:
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        add_lora(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=targets,
                                   lora_dropout=args.lora_dropout))
    _run_training(model, data, tcfg, args)
    if args.full:
        save_gpt2(model, args.out)
    else:
        save_adapter(model, args.out, metadata={"base_model_sha256": file_sha256(Path(args.base) / WEIGHTS_FILE),
                                                 "base_model_path": str(Path(args.base).resolve())})
    tokenizer.save(args.out)
    return 0


def cmd_generate(args):
    model, tokenizer = load_model_dir(args.model, args.adapter)
    if not args.prompt:
        raise ValueError("--prompt must not be empty")
    ids = tokenizer.encode(args.prompt)[-model.config.block_size:]
    backend.manual_seed(args.seed)
    out = model.generate(ids[None, :], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
    text = tokenizer.decode(out[0, len(ids):])
    if args.stop and args.stop in text:
        text = text[:text.index(args.stop) + len(args.stop)]
    sys.stdout.write(args.prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0


def cmd_merge(args):
    model, tokenizer = load_model_dir(args.base, args.adapter)
    merge_and_unload(model)
    save_gpt2(model, args.out)
    tokenizer.save(args.out)
    print(f"merged {args.adapter} into {args.base}: {args.out}")
    return 0


def cmd_eval(args):
    model, tokenizer = load_model_dir(args.model, args.adapter)
    data = make_dataset(args, model.config.block_size, tokenizer)
    if args.disable_adapter and args.adapter:
        with disable_lora(model):
            metrics = evaluate(model, data, "val", args.batch_size, args.eval_batches)
    else:
        metrics = evaluate(model, data, "val", args.batch_size, args.eval_batches)
    print(json.dumps({"model": str(args.model), "adapter": args.adapter, "data": data.name, **metrics}))
    return 0


def cmd_demo(args):
    from .demo import DemoSettings, run_demo
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    ranks = [int(r) for r in args.ranks.split(",")] if args.ranks else []
    if any(r <= 0 for r in ranks):
        raise ValueError(f"--ranks must be positive integers; got {args.ranks!r}")
    run_demo(Path(args.out), settings, ranks=ranks, seed=args.seed, quiet=args.quiet)
    return 0

