"""What each CLI subcommand does (the parser lives in cli.py).

Every command checks what it can before it reads a model's weights: --out (run_dir.py), the flags,
the model's config.json and tokenizer (model_dir.py), the data (inputs.py) and the memory the run
needs (memory.py). Only then is the model loaded and --out written. What it does is said on
stderr (unless --quiet); results go to stdout.
"""

import contextlib
import json
import math
import shlex
import sys
from pathlib import Path

from .. import backend, distributed
from ..data.chat_answers import chat_prompt_ids
from ..io.gpt2_checkpoint import save_gpt2
from ..io.gguf_write import save_gguf, save_lora_gguf
from ..io.hf_checkpoint import save_model
from ..io.train_checkpoint import latest_checkpoint
from ..lora import LoraConfig, add_lora, count_parameters, disable_lora, merge_and_unload, save_adapter
from ..lora.conversion import CONVERTED_INITS, as_plain_lora, initial_factors
from ..models import GPT, GPTConfig, family_of
from ..optim import loraplus_param_groups
from ..training import TrainConfig, evaluate_batches, train
from ..training.progress import plural, say
from .demo import DemoSettings, run_demo
from .inputs import (check_data_flags, eval_inputs, make_dataset, model_context, new_tokenizer,
                     prompt_ids, window)
from .memory import available_bytes, check_fits, fitting_sizes, format_bytes, parameter_count, run_bytes
from .model_dir import (adapter_metadata, check_vocab_sizes, copy_generation_config, default_lora_targets, is_large,
                        load_model_dir, load_tokenizer, read_model_config, save_tokenizer, stored_dtype)
from .run_dir import check_output_dir, locked, output_dir, restore_run_args, save_run_config

LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "targets", "dora", "init", "loraplus_ratio", "quantize",
                "base_dtype")


class TrainingStopped(Exception):
    """Training ended early (NaN loss or Ctrl-C); carries the exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def prepared_out(args, resumable=True):
    """--out checked and locked (and, with --resume, the saved settings restored) before anything is loaded."""
    check_output_dir(args.out, getattr(args, "resume", False), args.overwrite, resumable)
    with locked(args.out) as lock:
        if getattr(args, "resume", False):
            restore_run_args(args)
        _check_ranks_alike(args)
        yield lock


def _check_ranks_alike(args):
    """In a data-parallel run, before any file is read or written: every rank has the same settings
    and the global batch splits over the ranks; then rank 0 alone speaks."""
    if distributed.world_size() > 1:
        distributed.check_same_settings(arguments={k: v for k, v in vars(args).items() if k not in ("func", "checks")})
        distributed.local_batch_size(args.batch_size)
        args.quiet = args.quiet or not distributed.is_main()


def read_model(model_dir):
    """(tokenizer, config) of a model directory, its weights not read."""
    tokenizer, config = load_tokenizer(model_dir), read_model_config(model_dir)
    check_vocab_sizes(tokenizer, config, model_dir)
    return tokenizer, config


def micro_rows(args):
    """Windows in one forward pass of a training step: this rank's rows of --batch-size, split
    into --grad-accum-steps micro-batches."""
    return -(-(args.batch_size // distributed.world_size()) // args.grad_accum_steps)


def choose_sizes(args, config, n_trainable, data, make_data):
    """--grad-accum-steps and --block-size that fit in memory: the user's, or more micro-batches
    for the same --batch-size (the same update), then a shorter window, each said on stderr.
    ``make_data(block)`` rebuilds the data when the window shrinks. Returns the data."""
    rows = args.batch_size // distributed.world_size()
    typed = args.given | ({"grad_accum_steps", "block_size"} if getattr(args, "resume", False) else set())
    accum, block = fitting_sizes(config, rows, data.block_size, n_trainable, typed=typed, accum=args.grad_accum_steps)
    if (accum, block) != (args.grad_accum_steps, data.block_size):
        need = run_bytes(config, micro_rows(args), data.block_size, n_trainable)[0]
        say(f"--grad-accum-steps {accum} --block-size {block}: chosen to fit in the {format_bytes(available_bytes())} "
            f"available ({micro_rows(args)} windows × {data.block_size} tokens a pass would need about "
            f"{format_bytes(need)}); the batch of {args.batch_size} windows is kept, in {plural(accum, 'micro-batch')} "
            f"whose gradients add up to the same update; give --grad-accum-steps or --block-size to choose yourself",
            args.quiet)
    args.grad_accum_steps, args.block_size = accum, block
    return data if block == data.block_size else make_data(block)


def train_config(args):
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum_steps=args.grad_accum_steps,
                       lr=args.lr, warmup_steps=min(args.warmup_steps, args.steps), eval_every=args.eval_every,
                       seed=args.seed, grad_clip=args.grad_clip)


def resume_command(args):
    return f"{args.prog} {args.command} --out {shlex.quote(str(args.out))} --resume"


def _stopped_message(result, args):
    if result.status == "interrupted" and latest_checkpoint(args.out):
        return f"{result.message}; continue with: {resume_command(args)}"
    if result.status == "interrupted":
        return (f"{result.message}; nothing to resume: run the command again (with --overwrite if {args.out} "
                f"is still there)")
    return result.message


def run_training(model, data, tcfg, args, param_groups=None):
    if getattr(args, "gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    if distributed.is_main():
        save_run_config(args)
    result = train(model, data, tcfg, out_dir=args.out, resume=args.resume, quiet=args.quiet,
                   param_groups=param_groups)
    if result.status != "done":
        raise TrainingStopped(_stopped_message(result, args), 1 if result.status == "nan" else 130)
    if not distributed.is_main():  # the "done:" line is the run's result (printed under --quiet too), said once
        return result
    if math.isnan(result.ms_per_step):
        print(f"done: the run had already finished its {plural(result.step, 'step')}; its final files are written")
    else:
        last = result.history[-1] if result.history else {}
        print(f"done: {plural(result.step, 'step')}, {result.ms_per_step:.1f} ms/step, "
              + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))
    return result


def _prepare_pretrain(args):
    """(model, data): everything pretrain reads and checks before --out is touched."""
    check_data_flags(args)
    data = make_dataset(args, args.block_size, new_tokenizer(args))
    config = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    check_fits(config, micro_rows(args), args.block_size, parameter_count(config))
    backend.manual_seed(args.seed)
    return GPT(config), data


def cmd_pretrain(args):
    with prepared_out(args) as lock:
        model, data = distributed.start_together(lambda: _prepare_pretrain(args))
        tcfg = train_config(args)
        with output_dir(args.out, args.overwrite, lock):
            run_training(model, data, tcfg, args)
            if distributed.is_main():
                save_gpt2(model, args.out)
                save_tokenizer(data.tokenizer, None, args.out)
    return 0


def _check_finetune_flags(args):
    if not args.base:
        raise ValueError("finetune needs --base DIR, the model directory to start from")
    lora_only = sorted("--" + k.replace("_", "-") for k in args.given & set(LORA_OPTIONS))
    if args.full and lora_only:
        raise ValueError(f"{', '.join(lora_only)} configure LoRA; --full trains every weight instead")
    if not args.full and args.init in CONVERTED_INITS and args.dora:
        raise ValueError(f"--init {args.init} with --dora: such an adapter cannot be saved for the original base; "
                         f"choose one of them")
    if args.quantize and (args.dora or args.init in CONVERTED_INITS):
        flag = "--dora" if args.dora else f"--init {args.init}"
        raise ValueError(f"{flag} needs the base's float weights, and --quantize {args.quantize} stores them "
                         f"quantized; drop --quantize, or train plain LoRA (--init default or gaussian) on it")
    check_data_flags(args)
    if args.lr is None:
        args.lr = DemoSettings().full_lr if args.full else DemoSettings().lora_lr


def _check_converted_rank(args, config):
    """PiSSA/OLoRA train on a residual base; saved for the original base, the adapter has rank 2r."""
    if args.full or args.init not in CONVERTED_INITS:
        return
    width = family_of(config).sizes(config).width
    if 2 * args.lora_r > width:
        raise ValueError(f"--init {args.init} saves a rank-2r adapter (2 × --lora-r {args.lora_r}), which must not "
                         f"exceed the model width {width}")
    say(f"--init {args.init} --lora-r {args.lora_r}: trains rank {args.lora_r} on the base minus its top "
        f"{args.lora_r} directions, and saves a rank-{2 * args.lora_r} LoRA that applies to the original base "
        f"(PEFT's conversion)", args.quiet)


def _default_targets(args):
    """--targets not typed (nor saved by the run --resume continues): PEFT's default for the base's family."""
    if args.full or args.targets is not None:
        return
    args.targets = ",".join(default_lora_targets(args.base))


def _lora_config(args):
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=targets,
                      lora_dropout=args.lora_dropout, use_dora=args.dora,
                      init_lora_weights=True if args.init == "default" else args.init)


def _make_trainable(model, args):
    """--full: every weight; else LoRA. Returns (AdamW's parameter groups or None, PiSSA/OLoRA's initial factors)."""
    backend.manual_seed(args.seed)
    if args.full:
        model.requires_grad_(True)
        return None, None
    if "targets" not in args.given and not args.resume:
        say(f"LoRA on {args.targets}, the default for this model's family (--targets chooses others)", args.quiet)
    add_lora(model, _lora_config(args))
    initial = initial_factors(model) if args.init in CONVERTED_INITS else None
    groups = loraplus_param_groups(model, args.lr, args.loraplus_ratio) if args.loraplus_ratio else None
    return groups, initial


def _save_finetuned(model, args, tokenizer, initial):
    if not distributed.is_main():
        return
    if args.full:
        save_model(model, args.out)
    else:
        if initial is not None:  # PiSSA/OLoRA trained on a residual base: save a LoRA for the original one
            say(f"converting the {args.init} adapter for the original base (reloading {args.base})", args.quiet)
            model = as_plain_lora(model, initial, load_model_dir(args.base)[0], model.peft_config["default"])
        save_adapter(model, args.out, metadata=adapter_metadata(args.base), base_model_name_or_path=args.base)
    save_tokenizer(tokenizer, args.base, args.out)


def _prepare_finetune(args):
    """(model, data, tokenizer, AdamW's groups, PiSSA/OLoRA's initial factors): everything finetune
    reads and checks before --out is touched, inputs first, the weights last."""
    _check_finetune_flags(args)
    tokenizer, config = read_model(args.base)
    _default_targets(args)
    _check_converted_rank(args, config)
    data = make_dataset(args, window(args, config), tokenizer, model_context(config))
    data = choose_sizes(args, config, parameter_count(config) if args.full else 0, data,
                        lambda block: make_dataset(args, block, tokenizer, model_context(config)))
    model = load_model_dir(args.base, quantize=args.quantize, quiet=args.quiet, base_dtype=args.base_dtype,
                           needs_float=args.full or args.dora or args.init in CONVERTED_INITS)[0]
    groups, initial = _make_trainable(model, args)
    check_fits(model.config, micro_rows(args), data.block_size, count_parameters(model)[0], model.dtype.itemsize)
    return model, data, tokenizer, groups, initial


def cmd_finetune(args):
    with prepared_out(args) as lock:
        model, data, tokenizer, groups, initial = distributed.start_together(
            lambda: _prepare_finetune(args), lambda prepared: distributed.fingerprint(prepared[0]))
        tcfg = train_config(args)
        with output_dir(args.out, args.overwrite, lock):
            run_training(model, data, tcfg, args, groups)
            _save_finetuned(model, args, tokenizer, initial)
    return 0


def _generate_prompt(args, tokenizer, config):
    """(prompt ids, the id generation stops at, the text echoed before the output): --chat renders a
    user turn with the model's template, stops at its end-of-turn token and echoes nothing; otherwise
    the prompt is continued up to the end of text. The prompt is --prompt, or standard input."""
    prompt = sys.stdin.read() if args.prompt in (None, "-") else args.prompt
    context = family_of(config).sizes(config).context
    if args.chat:
        ids = chat_prompt_ids(tokenizer, prompt.strip(), context)
        _say_chat_slides(args, len(ids), context)
        return ids, tokenizer.end_of_turn_id, ""
    ids = prompt_ids(tokenizer, prompt, context, args.unknown_chars, f"{args.prog} generate")
    return ids, getattr(tokenizer, "eot_token_id", None), prompt


def _say_chat_slides(args, n_prompt, block_size):
    """A chat reply that could run past the context slides the window, and the conversation's start
    (its system and user turns) drops out of what the model sees: said on stderr, as a cut prompt is."""
    if n_prompt + args.max_new_tokens > block_size:
        print(f"{args.prog} generate: the chat prompt is {n_prompt} tokens with its template; with --max-new-tokens "
              f"{args.max_new_tokens} the reply may run past the model's context of {block_size}, and after "
              f"{block_size - n_prompt} new tokens the conversation's start drops out of the window "
              f"(--max-new-tokens {block_size - n_prompt} keeps it)", file=sys.stderr)


def cmd_generate(args):
    tokenizer, config = read_model(args.model)
    ids, stop, echo = _generate_prompt(args, tokenizer, config)
    model = load_model_dir(args.model, args.adapter, quiet=args.quiet, force=args.force,
                           base_dtype=args.base_dtype, decoding=True)[0]
    backend.manual_seed(args.seed)
    out = model.generate(ids[None, :], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         stop_token_ids=None if stop is None else [stop])  # stops at it, as HF's generate
    new = [int(i) for i in out[0, len(ids):]]
    if stop in new:
        new = new[:new.index(stop)]
    text = tokenizer.decode(new)
    if args.stop and args.stop in text:
        text = text[:text.index(args.stop) + len(args.stop)]
    sys.stdout.write(echo + text + ("" if text.endswith("\n") else "\n"))
    return 0


def cmd_merge(args):
    with prepared_out(args, resumable=False) as lock:
        quiet = args.quiet or not is_large(read_model(args.base)[1])
        dtype = args.dtype or stored_dtype(args.base)
        model, tokenizer = load_model_dir(args.base, args.adapter, quiet=args.quiet, force=args.force)
        say(f"merging {args.adapter} into the base weights, then writing {args.out}", quiet)
        with output_dir(args.out, args.overwrite, lock):
            if args.gguf:  # llama.cpp's files: the adapter alone (before merging), then the merged model
                save_lora_gguf(model, Path(args.out) / "adapter.gguf")
            merge_and_unload(model)
            if args.gguf:
                save_gguf(model, Path(args.out) / "model.gguf", args.gguf, tokenizer_from=args.base)
            else:
                save_model(model, args.out, dtype)
            save_tokenizer(tokenizer, args.base, args.out)
            copy_generation_config(args.base, args.out)
    kept = "" if args.dtype else ", as the base" if dtype else ""
    print(f"merged {args.adapter} into {args.base}: {args.out} ({dtype or 'float32'}{kept})")
    return 0


def _eval_summary(args, data, metrics):
    adapter = f" + adapter {args.adapter}" + (" (disabled)" if args.disable_adapter else "") if args.adapter else ""
    lines = [f"model {args.model}{adapter} on {data.name}",
             f"loss {metrics['loss']:.4f} (perplexity {math.exp(min(metrics['loss'], 700)):.2f})",
             f"token accuracy {100 * metrics['token_acc']:.2f}%"]
    if "answer_acc" in metrics:
        lines.append(f"answer accuracy {100 * metrics['answer_acc']:.2f}% (every token of an answer right)")
    return "\n".join(lines)


def cmd_eval(args):
    if args.disable_adapter and not args.adapter:
        raise ValueError("--disable-adapter needs --adapter (it evaluates the base inside the adapted model)")
    tokenizer, config = read_model(args.model)
    data = eval_inputs(args, tokenizer, config)
    check_fits(config, args.batch_size, data.block_size, 0, training=False)
    model = load_model_dir(args.model, args.adapter, quiet=args.quiet, force=args.force,
                           base_dtype=args.base_dtype)[0]
    say(f"evaluating {data.what}", args.quiet)
    with disable_lora(model) if args.disable_adapter else contextlib.nullcontext():
        metrics = evaluate_batches(model, data.batches, data.has_answers, progress=not args.quiet)
    if args.json:
        print(json.dumps({"model": str(args.model), "adapter": args.adapter, "adapter_disabled": args.disable_adapter,
                          "data": data.name, **metrics}))
    else:
        print(_eval_summary(args, data, metrics))
    return 0


def _ranks(text, settings):
    try:
        ranks = [int(r) for r in text.split(",")] if text else []
    except ValueError:
        ranks = [0]
    if any(r <= 0 for r in ranks):
        raise ValueError(f"--ranks must be positive integers, e.g. 1,2,4,8; got {text!r}")
    if any(r > settings.n_embd for r in ranks):
        raise ValueError(f"--ranks: a rank above the model width n_embd={settings.n_embd} is not low rank; "
                         f"got {text!r}")
    return ranks


def cmd_demo(args):
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    ranks = _ranks(args.ranks, settings)
    with prepared_out(args, resumable=False) as lock, output_dir(args.out, args.overwrite, lock):
        run_demo(Path(args.out), settings, ranks=ranks, seed=args.seed, quiet=args.quiet)
    return 0
