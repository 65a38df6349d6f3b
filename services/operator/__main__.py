"""`python -m services.operator`: the StreamTable operator (see services/operator/README.md)."""

from services.common.cli import run_main
from services.operator.main import main

if __name__ == "__main__":
    run_main(main, "operator")
