"""The command line: the demo end to end in a subprocess, every subcommand, Ctrl-C and --resume,
--out guarding, the unknown-character policy, the README's demo numbers against a fresh run, the
installed entry point, and the README's setup lines. Bad input is catalogued in test_bad_inputs.py
(CLI_CASES: one line on stderr, exit code 2, nothing written)."""

import importlib.util
import io
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lora_np
import lora_np.data
from lora_np import to_numpy
from lora_np.app.cli import main
from lora_np.app.commands import load_model_dir
from lora_np.app.report import ACCURACY_TOLERANCE_POINTS, LOSS_TOLERANCE, comparable_rows, rows_that_disagree
from helpers import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "8"]


def run_cli(*args, timeout=300, cwd=ROOT, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", **(env or {}))
    return subprocess.run([sys.executable, "-m", "lora_np", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "base"
    assert main(["pretrain", "--task", "copy", "--out", str(out), "--steps", "30", "--eval-every", "15", "--quiet",
                 *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    start = time.perf_counter()
    proc = run_cli("demo", "--quick", "--out", out)
    return out, proc, time.perf_counter() - start


def test_demo_quick_writes_everything_and_tells_the_lora_story(demo_run, backend_name):
    out, proc, elapsed = demo_run
    assert proc.returncode == 0, proc.stderr
    for name in ("results.json", "results.md", "loss_curves.png", "costs.png", "base/model.safetensors",
                 "base/config.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                 "full_finetune/model.safetensors"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    full, lora = results["full"], results["lora"]
    assert lora["trainable"] < 0.05 * full["trainable"]
    assert lora["optimizer_state_bytes"] < 0.05 * full["optimizer_state_bytes"]
    # The adapter switched off is the pretrained base, exactly (same loss on task A, to the last bit).
    assert lora["A_after_adapter_off"]["loss"] == results["base"]["A"]["loss"]
    assert lora["max_abs_base_weight_change"] == 0.0
    assert full["A_after"]["loss"] > 2 * results["base"]["A"]["loss"]  # full fine-tuning forgot task A
    assert "| trainable parameters |" in proc.stdout
    assert elapsed < 120  # the brief asks for ≤ 60 s on 2 cores; generous here against a loaded CI


def _readme_block(kind):
    text = (ROOT / "README.md").read_text()
    return text.split(f"<!-- demo:{kind}:begin -->", 1)[1].split(f"<!-- demo:{kind}:end -->", 1)[0]


def test_readme_quick_table_is_what_a_fresh_run_prints(demo_run, backend_name):
    """Issue 16 item 11: the README's numbers come from the code. Same seed, same table (the
    timing and memory-peak rows aside), up to the cross-machine tolerance the README states
    (issue 38 item 1: another CPU's BLAS kernels move the third digit); refresh with
    `python tools/update_readme_demo.py --run quick`."""
    out, proc, _ = demo_run
    assert proc.returncode == 0, proc.stderr
    assert len(comparable_rows(_readme_block("quick"))) >= 10, \
        "README: no generated quick table between the demo:quick markers"
    stale = rows_that_disagree(_readme_block("quick"), (out / "results.md").read_text())
    assert not stale, f"README's quick table is stale: run python tools/update_readme_demo.py --run quick: {stale}"


def test_readme_states_the_tolerance_the_test_uses():
    text = (ROOT / "README.md").read_text()
    loss_abs, loss_rel = LOSS_TOLERANCE
    assert f"losses within {loss_abs:g} or {100 * loss_rel:g}%" in text
    assert f"accuracies within {ACCURACY_TOLERANCE_POINTS:g} points" in text


def test_the_tolerance_lets_the_kernels_differ_and_nothing_else():
    """Numbers seen on three OpenBLAS kernel sets pass; a count, a size, a larger loss or accuracy move fail."""
    table = _readme_block("quick")
    row = next(r for r in comparable_rows(table) if r.startswith("| val loss on B"))
    full, lora = (float(x) for x in re.findall(r"\d+\.\d+", row))
    acc_row = next(r for r in comparable_rows(table) if r.startswith("| answer accuracy on B"))
    acc = float(re.findall(r"(\d+\.\d)%", acc_row)[1])
    assert rows_that_disagree(table, table) == []
    near = table.replace(row, f"| val loss on B (shift) | {full + 0.02:.3f} | {lora * 1.05:.3f} |")
    near = near.replace(acc_row, acc_row.replace(f"{acc:.1f}%", f"{acc - 3.1:.1f}%"))
    assert rows_that_disagree(table, near) == []
    far_loss = table.replace(row, f"| val loss on B (shift) | {full:.3f} | {lora * 1.2:.3f} |")
    far_acc = table.replace(acc_row, acc_row.replace(f"{acc:.1f}%", f"{acc + 6:.1f}%"))
    count_row = next(r for r in comparable_rows(table) if r.startswith("| trainable parameters"))
    other_count = table.replace(count_row, count_row.replace("4,096", "4,097"))
    assert other_count != table
    for changed in (far_loss, far_acc, other_count, table.replace("| saved size |", "| saved sizes |")):
        assert len(rows_that_disagree(table, changed)) == 1


def test_the_demo_is_bit_identical_on_one_machine(demo_run, tmp_path):
    """Across machines the README allows a tolerance; on one machine, the same seed gives the same bits."""
    out, proc, _ = demo_run
    assert proc.returncode == 0, proc.stderr
    assert main(["demo", "--quick", "--out", str(tmp_path / "again"), "--quiet"]) == 0
    first, again = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "again"))
    for run in ("full", "lora"):
        assert first[run]["history"] == again[run]["history"] and first[run]["B"] == again[run]["B"]
    assert first["base"]["A"] == again["base"]["A"]
    assert (comparable_rows((out / "results.md").read_text())
            == comparable_rows((tmp_path / "again" / "results.md").read_text()))


def test_readme_full_section_is_generated():
    block = _readme_block("full")
    assert "| trainable parameters |" in block and "What it shows:" in block, \
        "README: run python tools/update_readme_demo.py --run full"


def test_finetune_generate_merge_eval(base_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    assert main(["finetune", "--base", str(base_dir), "--task", "shift", "--out", str(adapter), "--steps", "20",
                 "--eval-every", "10", "--lora-r", "2", "--targets", "c_attn,c_fc", "--batch-size", "8",
                 "--quiet"]) == 0
    assert (adapter / "adapter_config.json").is_file() and (adapter / "char_vocab.json").is_file()
    capsys.readouterr()
    assert main(["generate", "--model", str(base_dir), "--adapter", str(adapter), "--prompt", "abc>",
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("abc>") and len(out) in (10, 11)  # 6 new characters (+ a final newline)
    merged = tmp_path / "merged"
    assert main(["merge", "--base", str(base_dir), "--adapter", str(adapter), "--out", str(merged)]) == 0
    a, _ = load_model_dir(base_dir, adapter)
    m, _ = load_model_dir(merged)
    idx = np.array([[1, 2, 3, 8]])
    np.testing.assert_allclose(to_numpy(m(idx)[0]), to_numpy(a(idx)[0]), rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main(["eval", "--model", str(base_dir), "--adapter", str(adapter), "--task", "shift", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"loss", "token_acc", "answer_acc"}
    assert main(["eval", "--model", str(base_dir), "--adapter", str(adapter), "--disable-adapter", "--task", "copy",
                 "--json"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(base_dir), "--task", "copy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == off["loss"]


def test_free_text_has_no_answer_accuracy_and_unknown_characters_can_be_dropped_or_mapped(base_dir, tmp_path, capsys):
    """Items 9 and 10: text with characters the base lacks trains with --unknown-chars drop or
    map:X; free text prints no (meaningless) answer accuracy."""
    text = tmp_path / "text.txt"
    text.write_text("abc>abc\ncafé>cafe\n" * 40)
    out = tmp_path / "full"
    code, stdout, err = cli(capsys, "finetune", "--base", base_dir, "--full", "--data", text, "--out", out,
                            "--steps", "10", "--eval-every", "5", "--batch-size", "4", "--unknown-chars", "drop")
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and (out / "char_vocab.json").is_file()
    assert "val_loss" in stdout and "answer_acc" not in stdout
    code, stdout, err = cli(capsys, "eval", "--model", out, "--data", text, "--unknown-chars", "map:e", "--json")
    assert code == 0, err
    assert "answer_acc" not in json.loads(stdout) and "loss" in json.loads(stdout)


def test_jsonl_on_a_character_model(base_dir, tmp_path, capsys):
    """prompt/completion lines on a char model: a newline closes each example; the loss counts the
    completion, so answer accuracy is reported."""
    rows = [{"prompt": f"{w}>", "completion": w} for w in ("abc", "bad", "cafe", "dead", "face", "bead") * 8]
    data = tmp_path / "copy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(capsys, "eval", "--model", base_dir, "--data", data, "--json")
    assert code == 0, err
    assert set(json.loads(out)) >= {"loss", "token_acc", "answer_acc"}


def test_finetune_quantize_trains_lora_on_a_quantized_base(tmp_path, capsys):
    """--quantize nf4|int8 loads the base's Linear weights quantized (QLoRA): the run trains, and
    its losses differ from the float base's (the weights it computes with are not the same)."""
    base = tmp_path / "base64"
    assert cli(capsys, "pretrain", "--task", "copy", "--out", base, "--steps", 2, "--eval-every", 2, "--quiet",
               "--n-layer", 1, "--n-head", 2, "--n-embd", 64, "--block-size", 16, "--batch-size", 4)[0] == 0
    losses = {}
    for scheme in ("float", "nf4", "int8"):
        out = tmp_path / scheme
        extra = [] if scheme == "float" else ["--quantize", scheme]
        code, _, err = cli(capsys, "finetune", "--base", base, "--task", "shift", "--out", out, "--steps", 3,
                           "--eval-every", 3, "--batch-size", 4, "--quiet", *extra)
        assert code == 0, err
        losses[scheme] = [json.loads(line).get("val_loss") for line in (out / "log.jsonl").read_text().splitlines()]
    assert losses["nf4"] != losses["float"] and losses["int8"] != losses["float"]


def test_eval_data_help_says_evaluate():
    proc = run_cli("eval", "--help")
    assert "for evaluation" in proc.stdout and "train on" not in proc.stdout


def test_ctrl_c_saves_and_resume_from_out_alone_finishes(tmp_path, capsys):
    """Item 6: `--out DIR --resume` alone continues (the base and settings come from the run),
    and --steps extends the run."""
    out = tmp_path / "run dir" / "ad 1"  # issue 28 item 4: the printed command is quoted for the shell
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "lora_np", "pretrain", "--task", "copy", "--out", str(out),
                             "--steps", "100000", "--eval-every", "1000", "--quiet", *TINY], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    assert f"python -m lora_np pretrain --out {shlex.quote(str(out))} --resume" in err, err
    done = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert done >= 20
    code, _, err = cli(capsys, "pretrain", "--out", out, "--resume", "--steps", done - 1)
    assert code == 2 and "below the" in err
    code, _, err = cli(capsys, "pretrain", "--out", out, "--resume", "--steps", done + 5, "--quiet")
    assert code == 0, err
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == done + 5


def test_finetune_resume_keeps_its_base_and_extends_with_steps(base_dir, tmp_path, capsys):
    out = tmp_path / "adapter"
    args = ["finetune", "--base", base_dir, "--task", "shift", "--out", out, "--steps", "4", "--eval-every", "2",
            "--batch-size", "4", "--quiet"]
    assert cli(capsys, *args)[0] == 0
    code, _, err = cli(capsys, "finetune", "--out", out, "--resume", "--base", tmp_path, "--quiet")
    assert code == 2 and "--base" in err and "differs from the saved" in err
    code, _, err = cli(capsys, "finetune", "--out", out, "--resume", "--lr", "0.1", "--quiet")
    assert code == 2 and "--lr 0.1 differs" in err
    code, _, err = cli(capsys, "finetune", "--out", out, "--resume", "--base", base_dir, "--steps", "6", "--quiet")
    assert code == 0, err
    assert json.loads((out / "run_config.json").read_text())["steps"] == 6
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 6


def test_resume_accepts_new_reporting_settings_and_refuses_optimization_ones(base_dir, tmp_path, capsys):
    """Issue 38 item 9: --eval-every only says when to evaluate and checkpoint, so a resume may change
    it; the run then ends on the weights of a run that never stopped (oracle: the straight run's
    adapter, bit for bit). Settings that change the optimization (--lr, --batch-size,
    --grad-accum-steps) are still refused."""
    from lora_np.io.safetensors_file import read_safetensors
    common = ["--base", base_dir, "--task", "shift", "--batch-size", "4", "--quiet"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(capsys, "finetune", *common, "--out", straight, "--steps", "4", "--eval-every", "2")[0] == 0
    assert cli(capsys, "finetune", *common, "--out", split, "--steps", "4", "--eval-every", "2")[0] == 0
    import shutil  # as if the run had stopped at step 2: its checkpoint the latest, no final files
    shutil.rmtree(split / "checkpoints" / "step_000004")
    (split / "checkpoints" / "latest.json").write_text(json.dumps({"dir": "step_000002", "step": 2}))
    (split / "adapter_model.safetensors").unlink()
    for flag, value in (("--lr", "0.1"), ("--batch-size", "8"), ("--grad-accum-steps", "2")):
        code, _, err = cli(capsys, "finetune", "--out", split, "--resume", flag, value, "--quiet")
        assert code == 2 and f"{flag} {value} differs from the saved" in err, err
    code, _, err = cli(capsys, "finetune", "--out", split, "--resume", "--eval-every", "1", "--quiet")
    assert code == 0, err
    assert json.loads((split / "run_config.json").read_text())["eval_every"] == 1
    evaluated = [r["step"] for r in map(json.loads, (split / "log.jsonl").read_text().splitlines()) if "val_loss" in r]
    assert evaluated == [2, 3, 4]
    ours, theirs = (read_safetensors(d / "adapter_model.safetensors")[0] for d in (split, straight))
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_existing_out_needs_resume_or_overwrite(base_dir, tmp_path, capsys):
    """Item 5: a second run into the same --out is refused; --overwrite replaces it (and its
    checkpoints, so a later --resume cannot pick up the old run)."""
    out = tmp_path / "run"
    args = ["pretrain", "--task", "copy", "--out", out, "--steps", "4", "--eval-every", "4", "--quiet", *TINY]
    assert cli(capsys, *args)[0] == 0
    before = (out / "model.safetensors").read_bytes()
    code, _, err = cli(capsys, *args, "--seed", "1")
    assert code == 2 and "already holds files" in err and (out / "model.safetensors").read_bytes() == before
    (out / "checkpoints" / "step_000099").mkdir()
    code, _, err = cli(capsys, *args, "--seed", "1", "--overwrite")
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() != before
    assert not (out / "checkpoints" / "step_000099").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_out(monkeypatch, tmp_path, capsys):
    """Item 3: memory that runs out anyway (the estimate is an estimate) is one line, and the --out
    the command had made is removed, not left holding only run_config.json."""
    import lora_np.app.commands as commands

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(commands, "train", out_of_memory)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", "--task", "copy", "--out", out, "--steps", 2, *TINY)
    assert code == 2 and "out of memory" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_files_are_written_as_the_umask_says(tmp_path, capsys):
    """Item 7: 0644 under umask 022 (mkstemp would give 0600), 0600 under 077."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert cli(capsys, "pretrain", "--task", "copy", "--out", out, "--steps", "2", "--eval-every", "2",
                   "--quiet", *TINY)[0] == 0
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
        assert modes and all(m == 0o644 for m in modes.values()), modes
        os.umask(0o077)
        from lora_np.io.atomic import atomic_write_text
        atomic_write_text(tmp_path / "private.txt", "x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_progress_bar_shows_the_loss(monkeypatch, tmp_path, capsys):
    """Item 10: on a terminal, the tqdm bar's postfix carries the latest loss."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["pretrain", "--task", "copy", "--out", str(tmp_path / "run"), "--steps", "3", "--eval-every", "3",
                 *TINY]) == 0
    assert re.search(r"loss=\d+\.\d{4}", terminal.getvalue()), terminal.getvalue()[-300:]


def test_backend_from_the_environment_is_one_line():
    """Item 1: a bad LORA_NP_BACKEND never gives an import traceback, and --backend numpy overrides it."""
    proc = run_cli("generate", "--help", env={"LORA_NP_BACKEND": "cuda"})
    assert proc.returncode == 0
    proc = run_cli("pretrain", "--task", "copy", "--out", "/nonexistent/x", env={"LORA_NP_BACKEND": "cuda"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "'numpy', 'cupy'" in proc.stderr


def test_every_subcommand_has_help():
    for cmd in ("demo", "pretrain", "finetune", "generate", "merge", "eval", "real-demo"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "--backend" in proc.stdout


def test_defaults_come_from_the_config_dataclasses():
    """Issue 14 item 5: the CLI repeats no default of TrainConfig, LoraConfig, DemoSettings."""
    from lora_np import LoraConfig
    from lora_np.app.cli import parse
    from lora_np.app.demo import DemoSettings
    from lora_np import TrainConfig
    pre = parse(["pretrain", "--out", "x"])
    demo, train = DemoSettings(), TrainConfig()
    assert (pre.n_layer, pre.n_head, pre.n_embd, pre.block_size) == (demo.n_layer, demo.n_head, demo.n_embd,
                                                                     demo.block_size)
    assert (pre.steps, pre.lr, pre.batch_size, pre.warmup_steps) == (demo.pretrain_steps, demo.pretrain_lr,
                                                                      train.batch_size, train.warmup_steps)
    ft = parse(["finetune", "--out", "x"])
    assert (ft.lora_r, ft.lora_alpha, ft.steps) == (LoraConfig().r, LoraConfig().lora_alpha, demo.finetune_steps)
    assert ft.targets is None  # chosen from the base's family: LoraConfig's c_attn for GPT-2, q_proj,v_proj for Llama
    from lora_np.app.cli import build_parser
    assert ",".join(LoraConfig().target_modules) in build_parser().commands["finetune"].format_help()
    assert pre.given == {"out"}


def test_pip_install_provides_lora_np_from_any_directory(tmp_path):
    """Item 8: `pip install .` installs the package and the `lora-np` entry point."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nlora-np = "lora_np\.app\.cli:main"$', pyproject, re.M)
    target = tmp_path / "site"
    # With setuptools at hand, build with it (no network); otherwise pip fetches it, as `pip install .` does.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                           "--no-cache-dir", "--target", str(target), str(ROOT)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (target / "bin" / "lora-np").is_file()
    for package in ("app", "data", "io", "lora", "nn", "ops", "optim", "tokenizer"):
        assert (target / "lora_np" / package / "__init__.py").is_file(), package
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_run = subprocess.run([sys.executable, "-m", "lora_np", "--help"], cwd=tmp_path, capture_output=True,
                              text=True, env={**env, "PYTHONPATH": str(target)}, timeout=120)
    assert help_run.returncode == 0 and "pretrain" in help_run.stdout, help_run.stderr
    script_run = subprocess.run([str(target / "bin" / "lora-np"), "--help"], cwd=tmp_path, capture_output=True,
                                text=True, env={**env, "PYTHONPATH": str(target)}, timeout=120)
    assert script_run.stdout.startswith("usage: lora-np "), script_run.stdout[:200] + script_run.stderr  # issue 28


def test_readme_setup_lines_install_what_they_promise():
    """Item 13: the demo installs the runtime only; the test line is the one .ci/run extracts."""
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert "pip install -r requirements.txt && python -m lora_np demo" in setup
    assert "pip install ." in setup
    test_line = readme.split("<!-- test-command -->", 1)[1].split("\n")[2]
    assert test_line == ("pip install -r requirements.txt -r requirements-dev.txt && "
                         "pip install --no-deps -r requirements-real.txt && python -m pytest -q -n 2")
    runtime = [line.split("=")[0].split(">")[0].split("<")[0].strip().lower()
               for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert runtime and not set(runtime) & {"pytest", "jupyter", "torch", "transformers", "peft", "nbclient",
                                           "ipykernel"}


def test_skip_reasons_are_summarised_once(tmp_path):
    """Item 12: pytest prints each skip reason once, with its count."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_data.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-2000:]
    from conftest import CUPY_SKIP_REASON
    from lora_np import backend
    if not backend.cupy_available():
        assert re.search(rf"\d+ skipped: {re.escape(CUPY_SKIP_REASON)}", proc.stdout), proc.stdout[-1500:]


# Issue 28: what a new user hit on the real-GPT-2 path.

def test_off_a_terminal_a_run_says_what_it_does(base_dir, tmp_path, capsys):
    """Item 1: stderr not a terminal (capsys): a start-up line with the parameters, tokens, windows
    and steps, then progress lines with loss, ms/step and the time left."""
    code, out, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", tmp_path / "a",
                         "--steps", 3, "--eval-every", 3, "--batch-size", 4)
    assert code == 0, err
    trainable = lora_np.count_parameters(lora_np.add_lora(load_model_dir(base_dir)[0], lora_np.LoraConfig()))
    start = f"training {trainable[0]:,} of {trainable[1]:,} parameters"
    assert start in err and "train tokens in" in err and "3 steps, batch 4 × 16 tokens" in err, err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/3 | loss ") and lines[-1].startswith("step 3/3 | loss ")
    assert all(re.search(r"\| \d+\.\d ms/step \| ETA \d+:\d\d$", line) for line in lines), lines
    assert "val_loss" in out and "done: 3 steps" in out


def test_progress_lines_come_every_so_many_seconds(monkeypatch):
    """A line after the first step, then at most one per `every_s`, and the last one."""
    from lora_np.training import progress

    class Log(io.StringIO):
        def isatty(self):
            return False

    clock = iter([0.0, 10.0, 31.0, 40.0, 70.0, 71.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = Log()
    bar = progress.Progress(6, 0, quiet=False, every_s=30, stream=log)
    for _ in range(6):
        bar.update(1.5, 100.0)
    steps = [line.split(" |")[0] for line in log.getvalue().splitlines()]
    assert steps == ["step 1/6", "step 3/6", "step 5/6", "step 6/6"]
    assert "ETA 0:05 " not in log.getvalue() and "| ETA 0:00" in log.getvalue()


def test_a_large_model_says_what_loading_and_merging_do(base_dir, tmp_path, capsys, monkeypatch):
    """Item 1: loading, merging and evaluating a model above LARGE_MODEL_BYTES are said on stderr."""
    import lora_np.app.model_dir as model_dir
    adapter = tmp_path / "adapter"
    assert cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", adapter, "--steps", 2,
               "--eval-every", 2, "--batch-size", 4, "--quiet")[0] == 0
    monkeypatch.setattr(model_dir, "LARGE_MODEL_BYTES", 0)
    code, _, err = cli(capsys, "merge", "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 0, err
    assert f"loading {base_dir}:" in err and "parameters, 1 layers × 16 wide" in err and "loaded in" in err
    assert "merging" in err
    code, out, err = cli(capsys, "eval", "--model", base_dir, "--task", "copy", "--batch-size", 4, "--eval-batches", 2)
    assert code == 0 and "loaded in" in err and "evaluating the validation split of task 'copy': 8 of " in err, err
    assert re.search(r"^batch 2/2 \| loss \d+\.\d{4} \| \d+\.\d ms/batch \| ETA 0:00$", err, re.M), err


def test_eval_prints_a_summary_and_json_on_request(base_dir, capsys):
    """Item 2 / 9: text like every other command; --json for the machine form; the same numbers."""
    code, text, err = cli(capsys, "eval", "--model", base_dir, "--task", "copy")
    assert code == 0, err
    code, js, _ = cli(capsys, "eval", "--model", base_dir, "--task", "copy", "--json")
    metrics = json.loads(js)
    assert f"model {base_dir} on task 'copy'" in text
    assert f"loss {metrics['loss']:.4f} (perplexity {np.exp(metrics['loss']):.2f})" in text
    assert f"token accuracy {100 * metrics['token_acc']:.2f}%" in text
    assert f"answer accuracy {100 * metrics['answer_acc']:.2f}%" in text


def test_eval_streams_windows_and_gives_the_plain_computation(base_dir, monkeypatch):
    """Item 2: with the logits' budget down to one window per forward pass, evaluate gives what a
    plain computation over the whole batch gives (NumPy log-softmax of model(x)'s logits), and its
    memory estimate no longer grows with the batch."""
    from lora_np.app.memory import run_bytes
    from lora_np.training import evaluation
    model, _ = load_model_dir(base_dir)
    data = lora_np.data.task_dataset("copy", 16, n_train=100, n_val=80)
    monkeypatch.setattr(evaluation, "LOGITS_BYTES", 1)
    got = lora_np.evaluate(model, data, batch_size=16, n_batches=2)
    losses, correct, n = [], 0, 0
    with lora_np.no_grad():
        for x, y in data.fixed_batches("val", 16, 2):
            logits = to_numpy(model(x)[0]).astype(np.float64)
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            keep = y != -1
            losses += list(-np.take_along_axis(logp, np.where(keep, y, 0)[..., None], -1)[..., 0][keep])
            correct += int(((logits.argmax(-1) == y) & keep).sum())
            n += int(keep.sum())
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got["token_acc"] == correct / n
    config = lora_np.GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert run_bytes(config, 32, 1024, 0, training=False)[0] == run_bytes(config, 1, 1024, 0, training=False)[0]


def test_defaults_that_do_not_fit_are_reduced_and_said(base_dir, tmp_path, capsys, monkeypatch):
    """Item 3, and issue 32 item 4: on a model folder, a run that does not fit keeps the user's
    --batch-size and splits it into micro-batches (gradient accumulation: the same update), said
    and recorded; typed sizes are the user's and are refused instead."""
    from lora_np.app import memory
    from lora_np.app.memory import run_bytes
    config = load_model_dir(base_dir)[0].config
    budget = run_bytes(config, 4, 16, 0)[0] / memory.FIT_FRACTION  # a micro-batch of 4 windows fits, 8 does not
    monkeypatch.setattr(memory, "available_bytes", lambda: budget + 1)
    out = tmp_path / "fit"
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", out, "--steps", 1,
                       "--eval-every", 1, "--quiet")
    assert code == 0, err
    saved = json.loads((out / "run_config.json").read_text())
    assert (saved["batch_size"], saved["grad_accum_steps"], saved["block_size"]) == (32, 8, 16)
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", tmp_path / "fit2",
                       "--steps", 1, "--eval-every", 1)
    assert "--grad-accum-steps 8 --block-size 16: chosen to fit" in err and "batch of 32 windows is kept" in err
    assert "batch 32 × 16 tokens in 8 micro-batches" in err
    monkeypatch.setattr(memory, "available_bytes", lambda: run_bytes(config, 2, 8, 0)[0])
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", tmp_path / "typed",
                       "--batch-size", 32, "--block-size", 16, "--grad-accum-steps", 1)
    assert code == 2 and "this run needs about" in err and not (tmp_path / "typed").exists()


def test_data_and_flags_are_checked_before_the_weights_are_read(base_dir, tmp_path, capsys, monkeypatch):
    """Item 6: a bad JSONL line, a --block-size above the context, --quantize with --dora: refused
    before load_model_dir is called; data errors name the file and line."""
    import lora_np.app.commands as commands

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(commands, "load_model_dir", never)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ab>", "completion": "ba"}\n\n{"prompt": "cd>"}\n')
    base = ["finetune", "--base", base_dir, "--out", tmp_path / "x"]
    for args, message in ((["--data", bad], f"{bad}, line 3: each line needs string fields"),
                          (["--task", "copy", "--block-size", 999], "exceeds the model's context of 16"),
                          (["--task", "copy", "--quantize", "nf4", "--dora"],
                           "--dora needs the base's float weights, and --quantize nf4"),
                          (["--task", "copy", "--quantize", "int8", "--init", "pissa"], "--init pissa needs")):
        code, _, err = cli(capsys, *base, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_a_prompt_longer_than_the_window_trains(base_dir, tmp_path, capsys):
    """Item 6: a JSONL example whose prompt fills whole windows (no completion token in them) used
    to stop training with `cross_entropy: every target equals ignore_index`; such windows are left out."""
    rows = [{"prompt": "abcdefgh" * 6 + ">", "completion": "ab"}] + [{"prompt": "ab>", "completion": "ba"}] * 12
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--data", data, "--out", tmp_path / "a", "--steps", 4,
                       "--eval-every", 2, "--batch-size", 13, "--quiet")
    assert code == 0, err


def test_a_second_run_on_the_same_out_is_refused(base_dir, tmp_path, capsys):
    """Item 8: one line while another run holds --out; a lock left by a crashed run (the file, no
    holder) does not stop the next one."""
    from lora_np.app.run_dir import OutputLock
    out = tmp_path / "run"
    args = ["finetune", "--base", base_dir, "--task", "shift", "--out", out, "--steps", 2, "--eval-every", 2,
            "--batch-size", 4, "--quiet"]
    assert cli(capsys, *args)[0] == 0
    assert not (out / ".lock").exists()  # issue 35 item 7: a finished command leaves no lock file
    (out / ".lock").touch()  # as a crashed run leaves it: the file, no process holding it
    held = OutputLock(out)
    held.take()
    try:
        code, _, err = cli(capsys, "finetune", "--out", out, "--resume", "--steps", 4, "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another lora_np run" in err, err
    finally:
        held.release()
    code, _, err = cli(capsys, "finetune", "--out", out, "--resume", "--steps", 4, "--quiet")
    assert code == 0, err


def test_resuming_a_finished_run_says_so(base_dir, tmp_path, capsys):
    """Item 8: not `done: 40 steps, nan ms/step`."""
    out = tmp_path / "run"
    assert cli(capsys, "pretrain", "--task", "copy", "--out", out, "--steps", 2, "--eval-every", 2, "--quiet",
               *TINY)[0] == 0
    code, _, err = cli(capsys, "pretrain", "--out", out, "--resume")
    assert code == 2 and "has already finished its 2 steps" in err and "--resume --steps N" in err, err


def test_double_ctrl_c_before_a_checkpoint_does_not_promise_a_resume(base_dir, tmp_path, capsys, monkeypatch):
    """Item 5: a second Ctrl-C mid-step before any checkpoint: the message says there is nothing to
    resume (and the library's says no checkpoint had been saved)."""
    import lora_np.app.commands as commands
    data = lora_np.data.task_dataset("copy", 16, n_train=100, n_val=40)
    calls = {"n": 0}
    real_batch = data.batch

    def batch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_batch(*args)

    data.batch = batch
    model = load_model_dir(base_dir)[0]
    lora_np.add_lora(model, lora_np.LoraConfig(r=2))
    result = lora_np.train(model, data, lora_np.TrainConfig(steps=10, eval_every=5, batch_size=4),
                           out_dir=tmp_path / "lib", quiet=True)
    assert (result.status == "interrupted"
            and result.message == "interrupted during step 3; no checkpoint had been saved yet")
    monkeypatch.setattr(commands, "train", lambda *a, **k: result)
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", tmp_path / "cli")
    assert code == 130 and "nothing to resume" in err and "--resume" not in err, err
    assert not (tmp_path / "cli").exists()  # the --out this run made is gone, as the message implies


def test_pissa_says_the_saved_rank(base_dir, tmp_path, capsys):
    """Item 9: --init pissa --lora-r 2 saves a rank-4 LoRA, and says so."""
    out = tmp_path / "pissa"
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", out, "--init", "pissa",
                       "--lora-r", 2, "--steps", 2, "--eval-every", 2, "--batch-size", 4)
    assert code == 0, err
    assert "--init pissa --lora-r 2:" in err and "saves a rank-4 LoRA" in err
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


def test_an_unwritable_out_is_one_line(base_dir, tmp_path, capsys, monkeypatch):
    """Item 9: not `[Errno 13] … .run_config.json.6aac6698cf22.tmp`. (As root every directory is
    writable, so there os.access is made to say what it says to anyone else.)"""
    import lora_np.app.run_dir as run_dir
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        monkeypatch.setattr(run_dir.os, "access", lambda path, mode: Path(path) != locked)
    code, _, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", locked / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{locked} is not writable (permission denied)" in err and ".tmp" not in err


def test_every_flag_has_help_and_the_program_is_named_as_run():
    """Item 9: help for every flag; usage says lora-np (the installed script) or python -m lora_np;
    --version."""
    from lora_np.app.cli import build_parser
    parser = build_parser()
    for name, sub in parser.commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    assert sub.prog == "lora-np eval"
    proc = run_cli("--help")
    assert proc.stdout.startswith("usage: python -m lora_np ")
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"python -m lora_np {lora_np.__version__}"


def test_openai_named_tokenizer_files_are_copied_as_they_are(tmp_path, capsys):
    """Item 9: the README says tokenizer files are copied byte for byte; encoder.json + vocab.bpe
    used to come out as vocab.json + merges.txt."""
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    base = tmp_path / "bpe"
    assert cli(capsys, "pretrain", "--data", text, "--tokenizer", "bpe", "--vocab-size", 300, "--out", base,
               "--steps", 2, "--eval-every", 2, "--quiet", *TINY)[0] == 0
    (base / "vocab.json").rename(base / "encoder.json")
    (base / "merges.txt").rename(base / "vocab.bpe")
    out = tmp_path / "adapter"
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text, "--out", out, "--steps", 2,
                       "--eval-every", 2, "--batch-size", 4, "--quiet")
    assert code == 0, err
    for name in ("encoder.json", "vocab.bpe"):
        assert (out / name).read_bytes() == (base / name).read_bytes()
    assert not (out / "vocab.json").exists()


def test_quiet_prints_results_only(base_dir, tmp_path, capsys):
    """--quiet: no start-up line, no progress, no status lines; finetune still prints its result (the
    "done:" line with the final losses), eval its own."""
    code, out, err = cli(capsys, "finetune", "--base", base_dir, "--task", "shift", "--out", tmp_path / "q",
                         "--steps", 2, "--eval-every", 2, "--batch-size", 4, "--quiet")
    assert code == 0 and err == "" and len(out.splitlines()) == 1 and out.startswith("done: 2 steps"), (out, err)
    assert "val_loss" in out
    code, out, err = cli(capsys, "eval", "--model", base_dir, "--task", "copy", "--quiet")
    assert code == 0 and err == "" and out.startswith(f"model {base_dir}")


def test_missing_data_names_every_jsonl_kind(capsys):
    """finetune without --data or --task: the message names chat lines too, not only prompt/completion."""
    code, _, err = cli(capsys, "finetune", "--base", "nowhere", "--out", "nowhere-out")
    assert code == 2 and '{"messages": [...]}' in err and '"completion"' in err, err
