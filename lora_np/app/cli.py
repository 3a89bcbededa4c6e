"""The command line: ``python -m lora_np {demo,real-demo,pretrain,finetune,generate,merge,eval} --help``.

Bad input (a missing file, a corrupt checkpoint, --lora-r 0, an unknown target, a size that would
not fit in memory) gives one line on stderr and exit code 2, never a traceback, and writes nothing.
A NaN loss exits 1, Ctrl-C exits 130 (after saving). A bug inside the library is not bad input: it
keeps its traceback.

Defaults come from the config dataclasses (``TrainConfig``, ``LoraConfig``, ``DemoSettings``,
``GPTConfig``), so the command line and the library cannot drift apart. An option the user did not
type stays absent from the parsed namespace until ``parse`` fills in its default, and ``args.given``
records the ones typed: ``--resume`` needs to tell them apart.
"""

import argparse
import sys

from .. import __version__, backend, distributed, parallel
from ..checks import check_int, check_number
from ..data import TASKS
from ..lora import LoraConfig
from ..models import GPTConfig
from ..training import TrainConfig
from .commands import (TrainingStopped, cmd_demo, cmd_eval, cmd_finetune, cmd_generate, cmd_merge,
                       cmd_pretrain)
from .demo import DemoSettings
from .model_dir import BASE_DTYPES
from .real_demo import add_real_demo_parser

TRAIN, LORA, DEMO, GPT_DEFAULTS = TrainConfig(), LoraConfig(), DemoSettings(), GPTConfig()
POSITIVE, NON_NEGATIVE = {"min": 1}, {"min": 0}
LORA_INITS = ("default", "gaussian", "pissa", "olora")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2); each option's default and range are kept aside
    (``option_defaults``, ``option_checks``) instead of being written into the namespace."""

    def __init__(self, *args, **kwargs):
        self.option_defaults, self.option_checks = {}, {}
        super().__init__(*args, argument_default=argparse.SUPPRESS, **kwargs)

    def add_argument(self, *flags, default=None, check=None, **kwargs):
        if default is not None and kwargs.get("action") not in ("help", "store_true"):
            kwargs["help"] = f"{kwargs.get('help', '')} (default: {default})".lstrip()
        action = super().add_argument(*flags, **kwargs)
        if action.dest != "help":
            self.option_defaults[action.dest] = False if kwargs.get("action") == "store_true" else default
        if check is not None:
            self.option_checks[action.dest] = (flags[0], check)
        return action

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p, seed_help="seed for initialisation, data order and dropout"):
    p.add_argument("--backend", help="numpy (CPU) or cupy (GPU); default: $LORA_NP_BACKEND or numpy")
    p.add_argument("--seed", type=int, default=TRAIN.seed, check=NON_NEGATIVE, help=seed_help)
    p.add_argument("--quiet", action="store_true", help="print only results: no progress, no status lines")


def _data(p, required_for):
    p.add_argument("--task", choices=sorted(TASKS),
                   help=f"an embedded toy task{'' if required_for is None else ' (this or --data is required)'}")
    p.add_argument("--data", metavar="FILE", help=f"your own data for {required_for or 'training'}: UTF-8 text "
                   "(.txt), or .jsonl lines {\"prompt\": ..., \"completion\": ...} or {\"messages\": [...]} "
                   "(conversations in the model's chat template; the loss on the assistant's turns)")
    p.add_argument("--unknown-chars", default="error", metavar="{error,drop,map:X}",
                   help="a character model meeting a character outside its vocabulary in --data: stop "
                        "and name it (error), drop it, or replace it by the vocabulary's character X")


def _output(p, what, resumable=True):
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier run left in --out"
                   + ("" if resumable else " (this command has no --resume: it runs in one go)"))


def _training(p, steps, lr, lr_help="", fits=False):
    p.add_argument("--steps", type=int, default=steps, check=POSITIVE,
                   help="optimizer steps (with --resume: a new total, to extend the run)")
    p.add_argument("--batch-size", type=int, default=TRAIN.batch_size, check=POSITIVE,
                   help="windows per optimizer step (over every rank); kept as given whatever the memory")
    p.add_argument("--grad-accum-steps", type=int, default=TRAIN.grad_accum_steps, check=POSITIVE,
                   help="run each batch through forward and backward in this many micro-batches, whose gradients "
                        "add up to the same update in less memory" + ("; raised until the run fits in memory "
                                                                      "unless typed" if fits else ""))
    p.add_argument("--lr", type=float, default=lr, check={"min": 0, "min_open": True},
                   help=f"peak learning rate (warmup, then cosine decay){lr_help}")
    p.add_argument("--warmup-steps", type=int, default=TRAIN.warmup_steps, check=NON_NEGATIVE,
                   help="steps of linear warmup from 0 to --lr")
    p.add_argument("--grad-clip", type=float, default=TRAIN.grad_clip, check={"min": 0, "min_open": True},
                   help="largest global gradient norm; larger gradients are scaled down to it")
    p.add_argument("--eval-every", type=int, default=TRAIN.eval_every, check=POSITIVE,
                   help="evaluate on the validation windows and save a checkpoint every this many steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with the settings it was started with")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="keep only each block's input and recompute its activations in the backward: the activation "
                        "memory of one block instead of all, for about a third more computation; the same gradients")
    p.add_argument("--data-parallel", action="store_true",
                   help="split every global batch over the ranks of an MPI job: mpiexec -n N ... (detected under "
                        "mpiexec without the flag; needs: pip install -r requirements-distributed.txt)")


def _demo_parser(sub):
    p = sub.add_parser("demo", help="pretrain, then LoRA vs full fine-tuning side by side (the main job)")
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier demo left in --out")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (under a minute)")
    p.add_argument("--ranks", default="", help="also sweep LoRA ranks, e.g. 1,2,4,8,16")
    _common(p)
    p.set_defaults(func=cmd_demo)


def _real_demo_parser(sub):
    add_real_demo_parser(sub, _common)


def _pretrain_parser(sub):
    p = sub.add_parser("pretrain", help="train a small GPT from scratch")
    _output(p, "model directory to write")
    _data(p, None)
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                   help="char: one token per character; bpe: GPT-2's byte-level BPE trained on --data")
    p.add_argument("--vocab-size", type=int, check={"min": 257},
                   help="with --tokenizer bpe: the BPE vocabulary size (256 bytes + merges + <|endoftext|>)")
    p.add_argument("--n-layer", type=int, default=DEMO.n_layer, check=POSITIVE, help="transformer blocks")
    p.add_argument("--n-head", type=int, default=DEMO.n_head, check=POSITIVE, help="attention heads per block")
    p.add_argument("--n-embd", type=int, default=DEMO.n_embd, check=POSITIVE,
                   help="model width (a multiple of --n-head)")
    p.add_argument("--block-size", type=int, default=DEMO.block_size, check=POSITIVE,
                   help="context length in tokens (also the training window)")
    p.add_argument("--dropout", type=float, default=GPT_DEFAULTS.dropout, check={"min": 0, "max": 1, "max_open": True},
                   help="dropout probability after embeddings, attention and MLP")
    _training(p, DEMO.pretrain_steps, DEMO.pretrain_lr)
    _common(p)
    p.set_defaults(func=cmd_pretrain)


def _lora_flags(p):
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--lora-r", type=int, default=LORA.r, check=POSITIVE, help="LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=LORA.lora_alpha, check={"min": 0, "min_open": True},
                   help="LoRA alpha (scaling alpha/r)")
    p.add_argument("--lora-dropout", type=float, default=LORA.lora_dropout,
                   check={"min": 0, "max": 1, "max_open": True}, help="dropout on the adapter's input during training")
    p.add_argument("--targets",
                   help="comma-separated module-name suffixes (default: PEFT's for the model's family: "
                        f"{','.join(LORA.target_modules)} for GPT-2 and character models, q_proj,v_proj for "
                        "Llama/Qwen): "
                        "GPT-2's c_attn, c_proj, c_fc, wte (the token embedding); "
                        "Llama/Qwen's q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, embed_tokens; "
                        "or all-linear (every Linear layer, as PEFT spells it)")
    p.add_argument("--dora", action="store_true", help="DoRA: train a magnitude per output and a LoRA direction")
    p.add_argument("--init", choices=LORA_INITS, default="default",
                   help="how the adapter starts: default (A Kaiming-uniform, B = 0), gaussian, pissa or olora "
                        "(from the base weight's SVD / QR, as in PEFT; saved as a rank-2r LoRA for the original base)")
    p.add_argument("--loraplus-ratio", type=float, check={"min": 0, "min_open": True},
                   help="LoRA+: B's learning rate is this times --lr (the paper uses 16)")
    p.add_argument("--quantize", choices=("nf4", "int8"),
                   help="QLoRA: load the base's Linear weights quantized (frozen, 4-bit NF4 or 8-bit)")
    _base_dtype(p)


def _base_dtype(p):
    p.add_argument("--base-dtype", choices=BASE_DTYPES, default="auto",
                   help="how the frozen base's Linear weights are kept: bfloat16 (half float32's memory, widened "
                        "tile by tile in each matmul; computation stays float32) or float32; auto (default): "
                        "bfloat16 when the folder stores bfloat16, float32 otherwise (and under --full, DoRA, "
                        "PiSSA/OLoRA, and for generate when float32 takes at most half the free memory: it "
                        "decodes about twice as fast)")


def _finetune_parser(sub):
    p = sub.add_parser("finetune", help="fine-tune a model directory with LoRA (default) or fully")
    p.add_argument("--base", help="model directory to start from (a character model, or a Hugging Face GPT-2, Llama, "
                                  "Qwen2 or Qwen3 folder); "
                                  "with --resume, read from the run")
    _output(p, "adapter directory (LoRA) or model directory (--full) to write")
    _data(p, "fine-tuning")
    p.add_argument("--block-size", type=int, check=POSITIVE,
                   help="training window in tokens (default: sized to the data: a .jsonl file's longest record "
                        "rounded up to a multiple of 64, a text's the model's context; at most the context, smaller "
                        "if it would not fit)")
    _lora_flags(p)
    _training(p, DEMO.finetune_steps, None, f" (default: {DEMO.lora_lr:g} with LoRA, {DEMO.full_lr:g} with --full)",
              fits=True)
    _common(p)
    p.set_defaults(func=cmd_finetune)


def _model_and_adapter(p):
    """The model a command reads (generate, eval), and the adapter it may apply on top."""
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--adapter", help="LoRA adapter directory to apply")
    _force(p)
    _base_dtype(p)


def _force(p):
    p.add_argument("--force", action="store_true", help="apply --adapter even if it records another base model "
                   "(the check of the base's tensors is skipped, and said)")


def _generate_parser(sub):
    p = sub.add_parser("generate", help="continue a prompt")
    _model_and_adapter(p)
    p.add_argument("--prompt", help="the text to continue (with --chat: the user's message); '-' or none: "
                   "read it from standard input")
    p.add_argument("--chat", action="store_true", help="render the prompt as a user turn with the model's chat "
                   "template and print the assistant's reply; generation stops at its end-of-turn token")
    p.add_argument("--max-new-tokens", type=int, default=32, check=POSITIVE,
                   help="the most tokens to generate; generation stops earlier at the tokenizer's end-of-sequence "
                   "token (as Hugging Face's generate does), or with --chat at the end-of-turn token")
    p.add_argument("--temperature", type=float, default=0.0, check=NON_NEGATIVE, help="0 = greedy")
    p.add_argument("--top-k", type=int, check=POSITIVE, help="sample among the k most likely tokens only")
    p.add_argument("--stop", help="cut the output after this string, e.g. a newline")
    p.add_argument("--unknown-chars", default="error", metavar="{error,drop,map:X}",
                   help="a character model meeting a prompt character outside its vocabulary")
    _common(p)
    p.set_defaults(func=cmd_generate)


def _merge_parser(sub):
    p = sub.add_parser("merge", help="fold an adapter into its base: a plain model folder of the base's kind")
    p.add_argument("--base", required=True, help="the model directory the adapter was trained on")
    p.add_argument("--adapter", required=True, help="the LoRA adapter directory to fold in")
    _force(p)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="what the merged weights are stored as (default: the base's, e.g. bfloat16)")
    _output(p, "model directory to write (loads with transformers' AutoModelForCausalLM.from_pretrained)",
            resumable=False)
    p.add_argument("--gguf", choices=("f16", "q8_0"), help="write model.gguf (this type) and the adapter as "
                   "adapter.gguf for llama.cpp instead of model.safetensors (Llama family or Gemma 3; needs "
                   "pip install gguf)")
    _common(p, seed_help="unused: merging draws no random numbers (accepted as every command accepts it)")
    p.set_defaults(func=cmd_merge)


def _eval_parser(sub):
    p = sub.add_parser("eval", help="validation loss and accuracy of a model (and adapter)")
    _model_and_adapter(p)
    p.add_argument("--disable-adapter", action="store_true",
                   help="evaluate the base inside the adapted model (needs --adapter)")
    _data(p, "evaluation")
    p.add_argument("--block-size", type=int, check=POSITIVE,
                   help="evaluation window in tokens (default: sized to the data as finetune's; at most the "
                        "model's context)")
    p.add_argument("--stride", type=int, check=POSITIVE,
                   help="with a text file: a window starts every this many tokens, and scores only the tokens "
                        "past the previous window (transformers' perplexity rule); smaller gives each token more "
                        "context for more work (default: --block-size, disjoint windows)")
    p.add_argument("--batch-size", type=int, default=TRAIN.batch_size, check=POSITIVE,
                   help="windows per batch (they stream through the model in slices that bound memory)")
    p.add_argument("--eval-batches", type=int, default=TRAIN.eval_batches, check=POSITIVE,
                   help="with --task: batches to evaluate (evenly spaced over its validation split); a --data "
                        "file is evaluated whole, each scored token once")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _common(p)
    p.set_defaults(func=cmd_eval)


def build_parser(prog="lora-np"):
    """The parser; ``parser.commands`` maps each subcommand to its own parser."""
    parser = _Parser(prog=prog, description="LoRA fine-tuning from scratch in NumPy.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = sub.choices
    for add in (_demo_parser, _real_demo_parser, _pretrain_parser, _finetune_parser, _generate_parser, _merge_parser,
                _eval_parser):
        add(sub)
    return parser


def parse(argv=None, prog="lora-np"):
    """Parse ``argv``: ``args.given`` holds the options typed, every other one gets its default."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.prog = prog
    sub = parser.commands[args.command]
    args.given = set(vars(args)) - {"command", "func", "prog"}
    for dest, default in sub.option_defaults.items():
        if not hasattr(args, dest):
            setattr(args, dest, default)
    args.checks = sub.option_checks
    return args


def check_options(args):
    """Every numeric option typed is checked against its range (a ValueError naming the flag)."""
    for dest, (flag, bounds) in args.checks.items():
        value = getattr(args, dest)
        if dest in args.given:
            (check_int if isinstance(value, int) else check_number)(flag, value, **bounds)


def _error(args, exc):
    message = " ".join(str(exc).split()) or type(exc).__name__
    alone = distributed.world_size() > 1 and not isinstance(exc, distributed.CollectiveError)
    where = f" (rank {distributed.rank()} of {distributed.world_size()})" if alone else ""
    print(f"{args.prog} {args.command}{where}: error: {message}", file=sys.stderr)
    return 2


def _join_ranks(args):
    """pretrain and finetune under mpiexec with several ranks (or with --data-parallel) join the MPI
    job; the other commands run in one process."""
    if hasattr(args, "data_parallel"):
        distributed.init(required=args.data_parallel)
        if args.data_parallel and distributed.world_size() < 2:
            raise ValueError(f"--data-parallel needs several ranks, and this is one process; start it under MPI, "
                             f"e.g. mpiexec -n 2 {args.prog} {args.command} ...")
    elif distributed.launched_ranks() > 1:
        raise ValueError(f"{args.command} runs in one process; start it without mpiexec (pretrain and finetune "
                         f"are the commands that train data-parallel)")


def _stop_every_rank(code):
    """After an error on this rank alone: stop the job (the others would wait for it forever)."""
    if distributed.world_size() > 1:
        distributed.abort(code)
    return code


def _select_backend(name):
    """``--backend`` if given; otherwise $LORA_NP_BACKEND must name a usable backend."""
    if name:
        backend.set_backend(name)
    else:
        backend.check_environment()


def main(argv=None, prog="lora-np"):
    """The command line; ``prog`` is how the user ran it (``python -m lora_np`` from __main__.py)."""
    args = parse(argv, prog)
    parallel.tune_host_allocator()  # opt-in for the library, on for the CLI: freed buffers are reused
    with distributed.stop_every_rank_on_error():  # a bug on one rank must not leave the others waiting
        return _run(args)


def _run(args):
    try:
        check_options(args)
        _select_backend(args.backend)
        _join_ranks(args)
        return args.func(args)
    except TrainingStopped as exc:  # every rank stops after the same step: rank 0 says why
        if distributed.is_main():
            print(f"{args.prog} {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except distributed.CollectiveError as exc:  # found by every rank together: said once
        return _error(args, exc) if distributed.is_main() else 2
    except (ValueError, OSError, backend.BackendUnavailableError) as exc:
        return _stop_every_rank(_error(args, exc))
    except MemoryError:
        return _stop_every_rank(_error(args, "out of memory; try a smaller --batch-size, --block-size or model"))
    except KeyboardInterrupt:
        print(f"{args.prog} {args.command}: interrupted", file=sys.stderr)
        return _stop_every_rank(130)
