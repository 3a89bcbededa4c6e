"""The command line on top of the library (``python -m lora_np``, ``lora-np``): the parser (cli.py),
the commands, model folders, --out, inputs, the memory estimate, and the demo with its report."""
