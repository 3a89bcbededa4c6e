"""The README's "LoRA in 30 lines" example runs as written and prints what its comment says."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_example():
    text = (ROOT / "README.md").read_text()
    section = text.split("## LoRA in 30 lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under '## LoRA in 30 lines'"
    return match.group(1)


def test_readme_example_runs_and_prints_its_comment(tmp_path, backend_name):
    code = _readme_example()
    promised = re.search(r"print_trainable_parameters\(model\)\s*#\s*(.+)", code).group(1).strip()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_NP_BACKEND": backend_name}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == promised
    assert (tmp_path / "my_adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "merged" / "model.safetensors").is_file()
