"""`nas dashboard`: optuna-dashboard over a search's study, on 127.0.0.1 unless the user names another host."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nas.errors import NasError
from nas.search.study import open_run_storage

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_dashboard(run_dir: Path, host: str = "127.0.0.1", port: int = 8080,
                    log: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard for the search in `run_dir` until interrupted."""
    import optuna_dashboard

    if not 1 <= port <= 65535:
        raise NasError(f"--port {port}: must be 1-65535")
    storage = open_run_storage(run_dir)
    if host not in LOOPBACK:
        log(f"warning: --host {host} serves the dashboard beyond this machine, and optuna-dashboard has no "
            "authentication: anyone who reaches the port can read and change this study")
    log(f"Optuna dashboard for {run_dir}: http://{host}:{port}/dashboard/ (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=host, port=port)
