"""The event generator: writes a scenario's event stream into its database.

    python -m services.generator [--scenario ecommerce] [--rate 50] [--seed 42] ...

Layout
  config.py            settings (environment variables, each with a command-line flag) -> GeneratorConfig
  engine.py            Engine: scenario-agnostic rate control, cycles, bursts, batching, exactly-once writes
  scenarios/__init__.py ScenarioGenerator base class, Rows/InsertTarget/UpdateTarget, load_scenario(name)
  scenarios/<name>.py  one module per scenario defining `Generator` (events as data)
  metrics.py           GeneratorMetrics: the Prometheus metrics (own registry)
  control.py           control_blueprint(engine): GET /control, POST /control/{burst,rate,pause,resume}
  main.py              build() and main(): wiring, signals, HTTP server, stop watchdog
"""
