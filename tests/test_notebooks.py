"""Every teaching notebook runs headless, top to bottom, within its time budget, and ends with a
cell of assertions that prints "all checks passed" — so a claim that stops being true fails here.
The notebooks are a numbered course (01_, 02_, ...); exercises' solutions run with them
(tests/test_exercises.py shows that each exercise's check fails on its stub)."""

import re
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
BUDGET_S = 120  # per notebook, on 2 CPU cores, not counting its real-model cells
REAL_MODEL_TAG = "real-model"  # a cell that runs a real pretrained model (08's SmolLM2) when it is installed
REAL_MODEL_BUDGET_S = 300      # all of a notebook's real-model cells together; each prints its own time


def _last_code_cell_text(nb):
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return "".join(o.get("text", "") for o in last.outputs)


def test_notebooks_are_a_numbered_course():
    numbers = [p.name[:3] for p in NOTEBOOKS]
    assert numbers[:5] == ["01_", "02_", "03_", "04_", "05_"], numbers
    assert all(n[:2].isdigit() and n[2] == "_" for n in numbers) and len(set(numbers)) == len(numbers), numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_use_the_public_api(path):
    """A notebook is what a learner copies: it calls lora_np.train / lora_np.evaluate, not the CLI's modules."""
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    for internal in ("lora_np.app", "lora_np.training"):
        assert internal not in code, f"{path.name} imports {internal}; use the names lora_np exports"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_with_outputs(path):
    """GitHub shows the committed file: it must hold the outputs of a complete run."""
    assert "all checks passed" in _last_code_cell_text(nbformat.read(path, as_version=4))


def _cell_seconds(cell):
    """The wall time nbclient recorded for an executed code cell (its execution metadata)."""
    times = cell.metadata.get("execution", {})
    start, end = times.get("iopub.execute_input"), times.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) -
            datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def _is_real_model_cell(cell):
    return REAL_MODEL_TAG in cell.metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_within_budget(path, backend_name, monkeypatch):
    """Under BUDGET_S for the lessons; a real model's cells (tagged, and run only where the model is
    installed, as in CI) have REAL_MODEL_BUDGET_S of their own."""
    monkeypatch.setenv("LORA_NP_BACKEND", backend_name)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    real = any(_is_real_model_cell(c) for c in nb.cells)
    client = NotebookClient(nb, timeout=REAL_MODEL_BUDGET_S if real else BUDGET_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    elapsed = time.perf_counter() - start
    real_s = sum(_cell_seconds(c) for c in nb.cells if c.cell_type == "code" and _is_real_model_cell(c))
    assert elapsed - real_s < BUDGET_S, f"{path.name} took {elapsed - real_s:.0f} s, over its {BUDGET_S} s budget " \
                                        f"(besides {real_s:.0f} s in real-model cells)"
    assert real_s < REAL_MODEL_BUDGET_S, \
        f"{path.name}'s real-model cells took {real_s:.0f} s, over {REAL_MODEL_BUDGET_S} s"
    assert "all checks passed" in _last_code_cell_text(nb), f"{path.name}'s last cell did not print 'all checks passed'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_real_model_cells_say_their_time(path):
    """A tagged real-model cell prints how long it took (issue 37: "a real-model cell says its time")."""
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code" and _is_real_model_cell(cell):
            assert "time.perf_counter()" in cell.source, f"{path.name} cell {i} is tagged {REAL_MODEL_TAG!r} but " \
                                                         f"measures no time to print"


# ---------------------------------------------------------------- figures quoted in prose come from outputs
# A figure is a number a reader takes as measured: one with a decimal point, or one followed by a unit
# of time, memory, share or ratio (ms, µs, s is left out: "5 s" budgets are not measurements; %, MB, MiB,
# GB, GiB, KB, ×). Math ($...$), code spans, links and section numbers (§4.1) are not prose figures. A
# figure is sourced when an output of the same notebook prints it (with its unit, the output may have more
# decimals), or, without a unit or with ×, when the notebook's code sets it (σ = 0.02, ratio=16).
_NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\[[^\]]*\]\([^)]*\)|https?://\S+", re.DOTALL)
_FIGURE = re.compile(r"(?<![\w.§,])(\d+(?:\.\d+)?)(\s?(?:ms|µs|%|MB|MiB|GB|GiB|KB|kB|×(?!\s?\d)))?")
_EXTERNAL = {  # figures quoted from elsewhere or computed in the sentence itself: (notebook, figure) -> why
    ("08_real_gpt2", "40 GB"): "GPT-2 paper: the size of WebText",
    ("08_real_gpt2", "51 MB"): "arithmetic in the sentence: 256 × 50,257 × 4 bytes",
}


def prose_figures(markdown):
    """(number, unit) for each figure in a markdown cell's prose."""
    return [(n, u.strip()) for n, u in _FIGURE.findall(_NOT_PROSE.sub(" ", markdown)) if "." in n or u]


def _sourced(number, unit, outputs, code):
    at = rf"(?<![\d.]){re.escape(number)}(?!\d)"
    if unit == "×" and re.search(at, code):          # a factor the code sets (ratio=16)
        return True
    if unit:
        return re.search(at + r"(?:\.\d+)?\s?" + re.escape(unit), outputs) is not None
    return re.search(at, outputs) is not None or re.search(at, code) is not None


def test_prose_figures_rule():
    assert prose_figures("LoRA measured 54 against 31 ms, $r = 8.5$, `0.25`, §4.1, 3.88 bits, 16× faster, 8 × 64") \
        == [("31", "ms"), ("3.88", ""), ("16", "×")]
    assert _sourced("31", "ms", "step: 31.2 ms", "") and not _sourced("31", "ms", "step: 131 ms", "")
    assert _sourced("0.02", "", "", "w = rng.standard_normal(3) * 0.02") and not _sourced("1.5", "", "11.5", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_quoted_in_prose_is_printed(path):
    """A number in the text that no output prints is a claim a re-run cannot confirm (issue 37)."""
    nb = nbformat.read(path, as_version=4)
    outputs = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                        for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    unsourced = [f"cell {i}: {n}{' ' + u if u else ''}" for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                 for n, u in prose_figures(c.source)
                 if not _sourced(n, u, outputs, code) and (path.stem, f"{n} {u}".strip()) not in _EXTERNAL]
    assert not unsourced, f"{path.name}: figures in the prose that no output prints: {unsourced}"


SEEDED_COMPARISONS = {  # notebooks whose comparisons issue 37 asked to rest on 3 seeds, and what their outputs say
    "04_lora_vs_full_finetune": "(mean ± spread, 3 seeds)",
    "06_lora_variants_and_hyperparameters": "(mean ± spread, 3 seeds)",
    "09_from_gpt2_to_llama": "(mean ± spread, 3 seeds",
}


@pytest.mark.parametrize("stem", sorted(SEEDED_COMPARISONS))
def test_comparisons_report_three_seeds(stem):
    """A comparison of two settings prints each setting's mean and spread over 3 seeds, not one run's number;
    the figures test above covers these notebooks too (it runs over every notebook)."""
    path = next(p for p in NOTEBOOKS if p.stem == stem)
    nb = nbformat.read(path, as_version=4)
    outputs = "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert SEEDED_COMPARISONS[stem] in outputs, f"{path.name} prints no comparison over 3 seeds"
    assert stem in [p.stem for p in NOTEBOOKS]
