"""The command line: ``python -m lora_np {demo,pretrain,finetune,generate,merge,eval} --help``.

Bad input (a missing file, a corrupt checkpoint, --lora-r 0, an unknown target) gives one line on
stderr and exit code 2, never a traceback. A NaN loss exits 1, Ctrl-C exits 130 (after saving).
"""

import argparse
import sys

from .. import backend
from .commands import (TrainingStopped, cmd_demo, cmd_eval, cmd_finetune, cmd_generate, cmd_merge,
                       cmd_pretrain)
from ..data import TASKS


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p):
    p.add_argument("--backend", default=None, help="numpy (CPU) or cupy (GPU); default: $LORA_NP_BACKEND or numpy")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and dropout")
    p.add_argument("--quiet", action="store_true", help="no progress bar or evaluation lines")


def _data(p, default_task):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--task", default=default_task, choices=sorted(TASKS), help=f"embedded task (default {default_task})")
    g.add_argument("--data", metavar="FILE.txt", help="train on your own UTF-8 text file instead")


def _training(p):
    p.add_argument("--steps", type=int, default=None, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warmup, then cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def build_parser():
    parser = _Parser(prog="lora_np", description="LoRA fine-tuning from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="pretrain, then LoRA vs full fine-tuning side by side (the main job)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (under a minute)")
    p.add_argument("--ranks", default="", help="also sweep LoRA ranks, e.g. 1,2,4,8,16")
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pretrain", help="train a small GPT from scratch")
    p.add_argument("--out", required=True, help="model directory to write")
    _data(p, "copy")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.0)
    _training(p)
    _common(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a model directory with LoRA (default) or fully")
    p.add_argument("--base", required=True, help="model directory to start from")
    p.add_argument("--out", required=True, help="adapter directory (LoRA) or model directory (--full) to write")
    _data(p, "shift")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scaling alpha/r)")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--targets", default="c_attn", help="comma-separated module-name suffixes (c_attn,c_proj,c_fc)")
    _training(p)
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--adapter", help="LoRA adapter directory to apply")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--stop", default=None, help="cut the output after this string, e.g. a newline")
    _common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("merge", help="fold an adapter into its base: a plain GPT-2 checkpoint")
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", required=True)
    _common(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("eval", help="validation loss and accuracy of a model (and adapter)")
    p.add_argument("--model", required=True)
    p.add_argument("--adapter")
    p.add_argument("--disable-adapter", action="store_true", help="evaluate the base inside the adapted model")
    _data(p, "shift")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batches", type=int, default=8)
    _common(p)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.backend:
            backend.set_backend(args.backend)
        return args.func(args)
    except TrainingStopped as exc:
        print(f"lora_np: {exc}", file=sys.stderr)
        return exc.code
    except (ValueError, TypeError, FileNotFoundError, backend.BackendUnavailableError) as exc:
        message = " ".join(str(exc).split())
        print(f"lora_np {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lora_np: interrupted", file=sys.stderr)
        return 130
