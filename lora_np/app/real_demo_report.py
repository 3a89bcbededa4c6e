"""What ``real-demo`` prints and writes to results.md: the accuracy table, the costs, the answers side by side."""

from pathlib import Path

from .memory import format_bytes


def _accuracy(results, key):
    n = len(results["heldout"])
    right = round(results[key] * n)
    return f"{100 * results[key]:.1f}% ({right}/{n})"


def _seconds(phase):
    return f"{phase['wall_s']:.0f} s wall, {phase['cpu_s']:.0f} s CPU"


def format_results(results):
    """The markdown tables: accuracy before/after, then what the run cost."""
    s, phases = results["settings"], results["phases"]
    name = Path(results["model"]).name
    lora = f"+ LoRA (r={s['lora_r']}, alpha={s['lora_alpha']:g}, {len(s['targets'])} Linear kinds)"
    load, asks = results["load_average"], results.get("asks", "greedy chat answers")
    rows = [
        f"| | {name} | {lora} |", "|---|---|---|",
        f"| held-out exact match, {asks} | {_accuracy(results, 'accuracy_before')} "
        f"| {_accuracy(results, 'accuracy_after')} |",
        f"| trainable parameters | 0 | {results['trainable']:,} ({100 * results['trainable'] / results['total']:.2f}%"
        f" of {results['total']:,}) |",
        "",
        "| phase | time |", "|---|---|",
        f"| load model and tokenizer | {_seconds(phases['load'])} |",
        f"| base answers ({len(results['heldout'])} prompts) | {_seconds(phases['answers_before'])} |",
        f"| LoRA training ({s['steps']} steps × {s['batch_size']} {results.get('examples', 'conversations')}, "
        f"{results['ms_per_step'] / 1000:.1f} s/step) | {_seconds(phases['train'])} |",
        f"| LoRA answers | {_seconds(phases['answers_after'])} |",
        f"| **whole run** | **{_seconds(results['time'])}** |",
        "",
        f"Peak memory (process RSS): {format_bytes(results['peak_rss_bytes'])}. Base weights: "
        f"{results['quantize'] or 'float32'}. Machine: {results['cpu_count']} CPUs, load average "
        f"{load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end; backend {results['backend']}.",
    ]
    return "\n".join(rows)


def side_by_side(results, n=None):
    """A table of held-out prompts with the expected answer, the base's and the LoRA model's."""
    rows = ["| prompt | expected | base | + LoRA |", "|---|---|---|---|"]
    for r in results["heldout"][:n]:
        cells = [r["prompt"], r["expected"]] + [_cell(r[k], r["expected"]) for k in ("before", "after")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(answer, expected):
    text = " ".join(answer.split()).replace("|", "\\|")
    return f"{text} {'✓' if answer.strip() == expected.strip() else '✗'}"
