"""`python -m services.generator`: the event generator (see services/generator/__init__.py)."""

from services.common.cli import run_main
from services.generator.main import main

if __name__ == "__main__":
    run_main(main, "generator")
