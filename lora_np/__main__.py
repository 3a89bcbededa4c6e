import sys

from .app.cli import main

sys.exit(main(prog="python -m lora_np"))
