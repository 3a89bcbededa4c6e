"""Write the demo's numbers into README.md from a run, so the README never holds a hand-typed one.

    python tools/update_readme_demo.py --run full     # run the full demo (~4 min), then update
    python tools/update_readme_demo.py --run quick    # the --quick table (what tests/test_cli.py checks)
    python tools/update_readme_demo.py --from runs/demo   # an existing run's results.json

The text between ``<!-- demo:full:begin -->`` and ``<!-- demo:full:end -->`` (or ``demo:quick``)
is replaced by ``lora_np.app.report.readme_demo_section(results)``: how the run was made, the
table the demo printed, and (full run) the headline figures. A full run also copies its two plots
to docs/demo_loss_curves.png and docs/demo_costs.png, which the README shows.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_np.app.report import readme_demo_section  # noqa: E402

PLOTS = {"loss_curves.png": "demo_loss_curves.png", "costs.png": "demo_costs.png"}


def markers(kind):
    return f"<!-- demo:{kind}:begin -->", f"<!-- demo:{kind}:end -->"


def replace_block(readme_text, kind, body):
    begin, end = markers(kind)
    if readme_text.count(begin) != 1 or readme_text.count(end) != 1:
        raise SystemExit(f"README: expected one {begin} and one {end}")
    head, rest = readme_text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def read_block(readme_text, kind):
    begin, end = markers(kind)
    return readme_text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def run_demo(kind, out):
    command = [sys.executable, "-m", "lora_np", "demo", "--out", str(out), "--overwrite", "--quiet"]
    subprocess.run(command + (["--quick"] if kind == "quick" else []), cwd=ROOT, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", choices=("quick", "full"), help="run the demo first (seed 0)")
    source.add_argument("--from", dest="run_dir", help="a demo output directory holding results.json")
    parser.add_argument("--out", help="where --run writes the demo (default runs/demo or runs/demo-quick)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args(argv)
    if args.run:
        run_dir = Path(args.out or ROOT / "runs" / ("demo" if args.run == "full" else "demo-quick"))
        run_demo(args.run, run_dir)
    else:
        run_dir = Path(args.run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    kind = "quick" if results.get("quick") else "full"
    readme = Path(args.readme)
    readme.write_text(replace_block(readme.read_text(), kind, readme_demo_section(results)))
    if kind == "full":
        for name, target in PLOTS.items():
            shutil.copyfile(run_dir / name, ROOT / "docs" / target)
    print(f"README.md: the {kind} demo section now shows {run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
