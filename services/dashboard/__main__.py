"""`python -m services.dashboard`: the dashboard under gunicorn, configured from the environment."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from services.common.cli import run_main
from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen


class DashboardServer(BaseApplication):
    def __init__(self, options: dict, config):
        self.options, self.dashboard_config = options, config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from services.dashboard.app import create_app

        return create_app(self.dashboard_config)


def main() -> int:
    from services.dashboard.config import load_config
    from services.dashboard.gunicorn_conf import gunicorn_options
    from services.dashboard.scenarios import load_view

    config = load_config()  # ConfigError -> one line, exit 2
    load_view(config.scenario)  # a scenario without a dashboard module fails here, not in every worker
    # gunicorn would retry a busy port five times and print its own text: one line naming the variable instead.
    ensure_can_listen(config.host, config.port, host_var="DASHBOARD_HOST", port_var="DASHBOARD_PORT")
    log = setup_logging("dashboard")
    log.info(
        "dashboard starting",
        extra={
            "fields": {
                "scenario": config.scenario,
                "bind": f"{config.host}:{config.port}",
                "workers": config.workers,
                "threads": config.threads,
                "controls": config.generator_url is not None,
            }
        },
    )
    DashboardServer(gunicorn_options(config), config).run()  # SIGTERM: graceful stop, exit 0
    return 0


if __name__ == "__main__":
    run_main(main, "dashboard")
