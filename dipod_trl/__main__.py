"""`python -m dipod_trl RECIPE [--key value ...]` trains from a recipe; `python -m dipod_trl demo` runs the demo.

This is what `accelerate launch [--config_file ...] -m dipod_trl recipes/gsm8k.yaml` executes on every process.
"""

from .commands.cli import main

if __name__ == "__main__":
    main()
