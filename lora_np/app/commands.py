"""What each CLI subcommand does (the parser lives in cli.py).

Model directories (a Hugging Face GPT-2 folder or a character model) are read and written by
model_dir.py; --out is guarded by run_dir.py. Everything that can be checked (files, data, sizes,
hyper-parameters, memory) is checked before --out is created.
"""

import contextlib
import json
import sys
from pathlib import Path

from .. import backend
from ..data import TASKS, encode_text, file_dataset, task_dataset
from ..data.text_files import read_jsonl_examples, read_text_file
from ..io.gpt2_checkpoint import save_gpt2
from ..lora import LoraConfig, add_lora, count_parameters, disable_lora, merge_and_unload, save_adapter
from ..model import GPT, GPTConfig
from ..optim import loraplus_param_groups
from ..tokenizer import BPETokenizer, CharTokenizer
from ..training import TrainConfig, evaluate, train
from ..lora.conversion import CONVERTED_INITS, as_plain_lora, initial_factors
from .demo import DemoSettings
from .memory import check_fits, gpt_parameter_count
from .model_dir import adapter_metadata, load_model_dir, save_tokenizer
from .run_dir import check_output_dir, output_dir, restore_run_args, save_run_config


class TrainingStopped(Exception):
    """Training ended early (NaN loss or Ctrl-C); carries the exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _check_unknown_policy(policy):
    if policy not in ("error", "drop") and not (policy.startswith("map:") and len(policy) == 5):
        raise ValueError(f"--unknown-chars must be error, drop or map:X (X one character); got {policy!r}")


def make_dataset(args, block_size, tokenizer=None):
    """The data named by --data or --task (one of them is required)."""
    if args.task and args.data:
        raise ValueError("give --task or --data, not both")
    _check_unknown_policy(args.unknown_chars)
    if args.data:
        return file_dataset(args.data, block_size, tokenizer, unknown=args.unknown_chars)
    if not args.task:
        raise ValueError(f"{args.command} needs data: --data FILE (.txt text or .jsonl prompt/completion lines) "
                         f"or --task {{{','.join(sorted(TASKS))}}} (an embedded toy task)")
    if tokenizer is not None and not isinstance(tokenizer, CharTokenizer):
        raise ValueError(f"--task {args.task} is a character-level toy task; this model has a BPE tokenizer: "
                         f"give --data FILE instead")
    return task_dataset(args.task, block_size, seed=args.seed, tokenizer=tokenizer)


def _window(args, model):
    """The training/evaluation window: --block-size, at most the model's context (its default)."""
    if args.block_size is None:
        return model.config.block_size
    if args.block_size > model.config.block_size:
        raise ValueError(f"--block-size {args.block_size} exceeds the model's context of {model.config.block_size} tokens")
    return args.block_size


def train_config(args):
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       warmup_steps=min(args.warmup_steps, args.steps), eval_every=args.eval_every,
                       seed=args.seed, grad_clip=args.grad_clip)


def _prepare_run(args):
    """--out checked (and, with --resume, the saved settings restored) before anything is loaded."""
    check_output_dir(args.out, args.resume, args.overwrite)
    if args.resume:
        restore_run_args(args)


def _run_training(model, data, tcfg, args, param_groups=None):
    save_run_config(args)
    result = train(model, data, tcfg, out_dir=args.out, resume=args.resume, quiet=args.quiet,
                   param_groups=param_groups)
    if result.status == "nan":
        raise TrainingStopped(result.message, 1)
    if result.status == "interrupted":
        resume = f"python -m lora_np {args.command} --out {args.out} --resume"
        raise TrainingStopped(f"{result.message}; continue with: {resume}", 130)
    if not args.quiet:
        last = result.history[-1] if result.history else {}
        print(f"done: {result.step} steps, {result.ms_per_step:.1f} ms/step, "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))
    return result


def _new_tokenizer(args):
    """pretrain's tokenizer: None (a task's, or characters of --data) or a BPE trained on --data."""
    if args.tokenizer == "char":
        if args.vocab_size is not None:
            raise ValueError("--vocab-size goes with --tokenizer bpe (a character vocabulary is the text's characters)")
        return None
    if not args.data or args.vocab_size is None:
        raise ValueError("--tokenizer bpe needs --data FILE (the text it learns from) and --vocab-size N")
    path = Path(args.data)
    text = ("".join(p + c for p, c in read_jsonl_examples(path)) if path.suffix.lower() == ".jsonl"
            else read_text_file(path))
    return BPETokenizer.train(text, args.vocab_size)


def cmd_pretrain(args):
    _prepare_run(args)
    data = make_dataset(args, args.block_size, _new_tokenizer(args))
    config = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    check_fits(config, args.batch_size, args.block_size, gpt_parameter_count(config))
    tcfg = train_config(args)
    backend.manual_seed(args.seed)
    model = GPT(config)
    with output_dir(args.out, args.overwrite):
        _run_training(model, data, tcfg, args)
        save_gpt2(model, args.out)
        save_tokenizer(data.tokenizer, None, args.out)
    return 0


LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "targets", "dora", "init", "loraplus_ratio", "quantize")


def _lora_config(args):
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=targets,
                      lora_dropout=args.lora_dropout, use_dora=args.dora,
                      init_lora_weights=True if args.init == "default" else args.init)


def cmd_finetune(args):
    _prepare_run(args)
    if not args.base:
        raise ValueError("finetune needs --base DIR, the model directory to start from")
    lora_only = sorted("--" + k.replace("_", "-") for k in args.given & set(LORA_OPTIONS))
    if args.full and lora_only:
        raise ValueError(f"{', '.join(lora_only)} configure LoRA; --full trains every weight instead")
    converted = not args.full and args.init in CONVERTED_INITS
    if converted and args.dora:
        raise ValueError(f"--init {args.init} with --dora: such an adapter cannot be saved for the original base; "
                         f"choose one of them")
    model, tokenizer = load_model_dir(args.base, quantize=args.quantize)
    if converted and 2 * args.lora_r > model.config.n_embd:
        raise ValueError(f"--init {args.init} saves a rank-2r adapter (2 × --lora-r {args.lora_r}), which must not "
                         f"exceed the model width n_embd={model.config.n_embd}")
    block_size = _window(args, model)
    data = make_dataset(args, block_size, tokenizer)
    if args.lr is None:
        args.lr = DemoSettings().full_lr if args.full else DemoSettings().lora_lr
    tcfg = train_config(args)
    backend.manual_seed(args.seed)
    if args.full:
        model.requires_grad_(True)
    else:
        add_lora(model, _lora_config(args))
    initial = initial_factors(model) if converted else None
    groups = loraplus_param_groups(model, args.lr, args.loraplus_ratio) if args.loraplus_ratio else None
    check_fits(model.config, args.batch_size, block_size, count_parameters(model)[0], model.dtype.itemsize)
    with output_dir(args.out, args.overwrite):
        _run_training(model, data, tcfg, args, groups)
        if args.full:
            save_gpt2(model, args.out)
        else:
            if converted:  # PiSSA/OLoRA trained on a residual base: save a LoRA for the original one
                model = as_plain_lora(model, initial, load_model_dir(args.base)[0], model.peft_config["default"])
            save_adapter(model, args.out, metadata=adapter_metadata(args.base))
        save_tokenizer(tokenizer, args.base, args.out)
    return 0


def _prompt_ids(tokenizer, prompt, block_size, unknown):
    """The prompt's ids, cut to the model's context from the left; what was cut is said on stderr."""
    if not prompt:
        raise ValueError("--prompt must not be empty")
    _check_unknown_policy(unknown)
    ids = encode_text(tokenizer, prompt, unknown)
    if len(ids) == 0:
        raise ValueError(f"--prompt {prompt!r} tokenizes to nothing")
    if len(ids) > block_size:
        cut = tokenizer.decode(ids[:-block_size])
        print(f"lora_np generate: the prompt is {len(ids)} tokens, longer than the model's context of {block_size}; "
              f"its first {len(ids) - block_size} tokens were cut: {cut!r:.80}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


def cmd_generate(args):
    model, tokenizer = load_model_dir(args.model, args.adapter)
    ids = _prompt_ids(tokenizer, args.prompt, model.config.block_size, args.unknown_chars)
    backend.manual_seed(args.seed)
    out = model.generate(ids[None, :], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
    new = [int(i) for i in out[0, len(ids):]]
    eot = getattr(tokenizer, "eot_token_id", None)
    if eot in new:
        new = new[:new.index(eot)]
    text = tokenizer.decode(new)
    if args.stop and args.stop in text:
        text = text[:text.index(args.stop) + len(args.stop)]
    sys.stdout.write(args.prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0


def cmd_merge(args):
    check_output_dir(args.out, overwrite=args.overwrite)
    model, tokenizer = load_model_dir(args.base, args.adapter)
    merge_and_unload(model)
    with output_dir(args.out, args.overwrite):
        save_gpt2(model, args.out)
        save_tokenizer(tokenizer, args.base, args.out)
    print(f"merged {args.adapter} into {args.base}: {args.out}")
    return 0


def cmd_eval(args):
    if args.disable_adapter and not args.adapter:
        raise ValueError("--disable-adapter needs --adapter (it evaluates the base inside the adapted model)")
    model, tokenizer = load_model_dir(args.model, args.adapter)
    block_size = _window(args, model)
    data = make_dataset(args, block_size, tokenizer)
    check_fits(model.config, args.batch_size, block_size, 0, model.dtype.itemsize, training=False)
    with disable_lora(model) if args.disable_adapter else contextlib.nullcontext():
        metrics = evaluate(model, data, "val", args.batch_size, args.eval_batches)
    print(json.dumps({"model": str(args.model), "adapter": args.adapter, "adapter_disabled": args.disable_adapter,
                      "data": data.name, **metrics}))
    return 0


def cmd_demo(args):
    from .demo import run_demo
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    try:
        ranks = [int(r) for r in args.ranks.split(",")] if args.ranks else []
    except ValueError:
        ranks = [0]
    if any(r <= 0 for r in ranks):
        raise ValueError(f"--ranks must be positive integers, e.g. 1,2,4,8; got {args.ranks!r}")
    if any(r > settings.n_embd for r in ranks):
        raise ValueError(f"--ranks: a rank above the model width n_embd={settings.n_embd} is not low rank; "
                         f"got {args.ranks!r}")
    check_output_dir(args.out, overwrite=args.overwrite)
    with output_dir(args.out, args.overwrite):
        run_demo(Path(args.out), settings, ranks=ranks, seed=args.seed, quiet=args.quiet)
    return 0
