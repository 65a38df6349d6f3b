"""`python -m services`: runs the service named by DEMO_SERVICE (the images' entry point: one Dockerfile builds
all five, each with its own DEMO_SERVICE; `python -m services.<name>` works as well)."""

import os
import runpy
import sys

SERVICES = ("bootstrap", "generator", "dashboard", "exporter", "operator")

if __name__ == "__main__":
    name = os.environ.get("DEMO_SERVICE", "")
    if name not in SERVICES:
        print(
            f"services: configuration error: DEMO_SERVICE={name!r} is not one of {', '.join(SERVICES)}", file=sys.stderr
        )
        sys.exit(2)
    runpy.run_module(f"services.{name}", run_name="__main__", alter_sys=True)
