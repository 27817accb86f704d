"""``rnnkit serve``: a trained run behind an HTTP API (FastAPI + uvicorn), the model loaded once.

Needs ``pip install 'rnnkit[serve]'``. :func:`create_app` gives the app for your own ASGI server.
"""

from __future__ import annotations

import logging
import os

from rnnkit.extras import require
from rnnkit.runs import open_run
from rnnkit.serve.app import ServeSettings, create_app
from rnnkit.serve.batching import MicroBatcher

__all__ = ["MicroBatcher", "ServeSettings", "create_app", "serve"]

logger = logging.getLogger(__name__)


def serve(
    run_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    settings: ServeSettings | None = None,
    access_log: bool = False,
    *,
    quantize: bool = False,
) -> None:
    """Serve ``run_dir`` until interrupted (Ctrl-C); ``quantize``: with int8 weights (CPU)."""
    uvicorn = require("uvicorn", "serve", "rnnkit serve")
    require("fastapi", "serve", "rnnkit serve")
    app = create_app(open_run(run_dir, device, quantize=quantize), settings)
    logger.info("serving %s on http://%s:%d (API docs at /docs); Ctrl-C stops", run_dir, host, port)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning")
