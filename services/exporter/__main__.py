"""`python -m services.exporter`: the Prometheus exporter (see services/exporter/__init__.py)."""

from services.common.cli import run_main
from services.exporter.main import main

if __name__ == "__main__":
    run_main(main, "exporter")
