"""``defectdet review RUN [--bind 127.0.0.1:8090] [--token-env VAR]``: the review view of a run, on its own.

While a run inspects, its operator page serves the review view (``--serve --review``). This command
serves the same view (:mod:`.review_page`) over a run's review folder after the run has ended, or
from another machine holding a copy of it, until Ctrl-C or SIGTERM. Writes need the token as on
the page: ``--token-env``'s, or one made now and stored in ``<run>/review/token`` (mode 0600);
beyond loopback ``--token-env`` is required.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError

LOG = logging.getLogger("defectdet.inspect")


def review_folder(run: str | Path) -> Path:
    """``<run>/review`` (or ``run`` itself when it is a review folder); else a ConfigError."""
    run = Path(run)
    for folder in (run / "review", run):
        if (folder / "items").is_dir():
            return folder
    raise ConfigError(
        f"{run}: no review queue here (expected <run>/review/items from defectdet inspect --review)"
    )


def serve(
    run: str | Path,
    bind: str = "127.0.0.1:8090",
    token_env: Optional[str] = None,
    stop: Optional[threading.Event] = None,
    on_ready: Optional[Callable[[str], None]] = None,
) -> str:
    """Serve the review view of ``run`` until ``stop`` is set (``on_ready(url)`` once it listens)."""
    from .outputs.live import exposure_token, parse_bind
    from .outputs.web import HttpServer
    from .review_page import attach_review

    folder = review_folder(run)
    host, port = parse_bind("--bind", bind)
    queue = folder / "queue.json"
    names = json.loads(queue.read_text(encoding="utf-8")).get("names", []) if queue.is_file() else []
    server = HttpServer("review", host, port, {}, exposure_token("review", host, token_env))
    attach_review(server, folder, names)
    server.start()
    stop = stop or threading.Event()
    LOG.info("review: %s/review (Ctrl-C ends)", server.url)
    if on_ready is not None:
        on_ready(server.url)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return server.url


def cli(argv: list[str]) -> int:
    from ..settings.options import parser
    from ..settings.tools import REVIEW

    ap = parser(REVIEW, __doc__.split("\n\n")[0], [(0, "the review view served until Ctrl-C")])
    a = ap.parse_args(argv)
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s review %(levelname)s %(message)s", "%H:%M:%S"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    url = serve(a.run, a.bind, a.token_env, stop)
    print(f"served {url}/review")
    return 0
