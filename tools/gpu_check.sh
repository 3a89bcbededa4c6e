#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one script, within about 8 minutes, with one summary file.
#
#   bash tools/gpu_check.sh            # on a machine with an NVIDIA GPU, from the repository's root
#
# 1. says what the machine is (nvidia-smi, Python, NumPy, CuPy);
# 2. makes sure CuPy and the test dependencies import: from wheels in .whl/ when that folder exists
#    (a machine without network: prepare them elsewhere with `bash tools/gpu_wheels.sh`), otherwise
#    with pip from requirements-gpu.txt and requirements-dev.txt (torch is left as the machine has it);
# 3. runs the whole test suite with LORA_NP_BACKEND=cupy (notebooks included: tests/test_notebooks.py
#    executes each one on the backend under test), one JUnit file;
# 4. runs the GPU benchmarks (bench_train on CuPy, S/M/L) and re-executes notebook 05 on the GPU so
#    that its saved outputs show the GPU (notebooks/05_gpu_backend.ipynb is rewritten in place);
# 5. writes $OUT/gpu_check_summary.md (OUT defaults to ./gpu_check_out): the machine, the counts of
#    passed/failed/skipped tests, each failure's name and first lines, and the benchmark table.
#
# Each phase has its own time limit so that the whole fits in 8 minutes; a phase that runs out is
# reported as such, not silently dropped. Exit status: 0 when every phase passed, 1 otherwise,
# 2 when there is no usable GPU (the summary says why).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-gpu_check_out}"
PY="${PYTHON:-python3}"
SUITE_S="${GPU_CHECK_SUITE_S:-330}"
BENCH_S="${GPU_CHECK_BENCH_S:-60}"
NB05_S="${GPU_CHECK_NB05_S:-60}"
mkdir -p "$OUT"
summary="$OUT/gpu_check_summary.md"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
status=0

say() { echo "$*" | tee -a "$summary"; }
: >"$summary"
say "# tools/gpu_check.sh — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say ""
say '```'
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found") | tee -a "$summary"
"$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)' 2>&1 | tee -a "$summary"
say '```'
if ! command -v nvidia-smi >/dev/null; then
    say ""
    say "**No NVIDIA driver** (nvidia-smi is not on PATH): nothing installed, nothing run."
    exit 2
fi

# 2. Dependencies: wheels carried in .whl/ (offline) or pip (online). A failure here is reported by
#    the import check right after it.
if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site .whl/*.whl \
        && export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$PY" -c 'import cupy' 2>/dev/null; then
    "$PY" -m pip install -q -r requirements-gpu.txt
    grep -v '^torch' requirements-dev.txt | "$PY" -m pip install -q -r /dev/stdin
fi
if ! "$PY" -c 'import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0; print("cupy", cupy.__version__, "devices", n)' \
        >>"$summary" 2>&1; then
    say ""
    say "**No usable GPU**: CuPy does not import or sees no CUDA device (see the line above); nothing else ran."
    exit 2
fi

# 3. The whole suite on CuPy.
say ""
say "## Test suite, LORA_NP_BACKEND=cupy (limit ${SUITE_S} s)"
start=$SECONDS
LORA_NP_BACKEND=cupy timeout "$SUITE_S" "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$OUT/suite.xml" >"$OUT/suite.log" 2>&1
rc=$?
say "pytest exit $rc after $((SECONDS - start)) s$([[ $rc == 124 ]] && echo ' (TIME LIMIT: the run was cut; counts below are of the tests that finished)')"
[[ $rc == 0 ]] || status=1
tail -n 3 "$OUT/suite.log" | tee -a "$summary"
"$PY" - "$OUT/suite.xml" >>"$summary" 2>&1 <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError) as exc:
    sys.exit(f"no JUnit file ({exc}); see suite.log")
failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
skipped = sum(c.find("skipped") is not None for c in cases)
print(f"\n{len(cases) - len(failed) - skipped} passed, {len(failed)} failed, {skipped} skipped\n")
for c in failed:
    node = c.find("failure") if c.find("failure") is not None else c.find("error")
    first = (node.get("message") or "").splitlines()[:2]
    print(f"- `{c.get('classname')}::{c.get('name')}`: {' / '.join(first)[:300]}")
EOF

# 4. Benchmarks on the GPU, and notebook 05 re-executed there.
say ""
say "## bench_train on CuPy (limit ${BENCH_S} s)"
timeout "$BENCH_S" "$PY" benchmarks/bench_train.py --backend cupy --configs S,M,L --steps 5 --warmup 2 \
    --skip-memory --out "$OUT/bench_train_cupy" >"$OUT/bench_train.log" 2>&1 || { status=1; say "bench_train failed or ran out of time: see bench_train.log"; }
[[ -f "$OUT/bench_train_cupy.md" ]] && cat "$OUT/bench_train_cupy.md" >>"$summary"

say ""
say "## notebooks/05_gpu_backend.ipynb on the GPU (limit ${NB05_S} s)"
if LORA_NP_BACKEND=cupy timeout "$NB05_S" "$PY" -m jupyter nbconvert --to notebook --execute --inplace \
        notebooks/05_gpu_backend.ipynb >"$OUT/nb05.log" 2>&1; then
    cp notebooks/05_gpu_backend.ipynb "$OUT/"
    say "executed; its outputs are in $OUT/05_gpu_backend.ipynb (commit them)"
else
    status=1
    say "not executed (no Jupyter kernel here, or it failed): see nb05.log"
fi
say ""
say "gpu_check exit $status"
exit "$status"
