"""A read-only HTTP server on its own thread (aiohttp), for the operator page and ``/metrics``.

Routes are GET (and HEAD), except those registered as ``"POST /path"`` (the review view's writes,
which check their own token: :mod:`defectdet.station.review_page`). A server bound beyond loopback has a token
(:func:`~.live.exposure_token`): every request must carry it as ``Authorization: Bearer <token>``
or ``?token=<token>``, else 401. aiohttp is imported when a server is built.
"""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Any, Callable, Optional

from .live import AsyncService
from .signals import SignalError

LOG = logging.getLogger("defectdet.inspect")


def import_aiohttp() -> Any:
    try:
        from aiohttp import web
    except ImportError:
        raise SignalError(
            "the operator page and /metrics need aiohttp: pip install 'defectdet[station]'"
        ) from None
    return web


class HttpServer:
    """``routes`` (path -> async handler) served on ``host:port`` from an :class:`AsyncService` thread."""

    def __init__(
        self, name: str, host: str, port: int, routes: dict[str, Callable], token: Optional[str] = None
    ):
        self.web = import_aiohttp()
        self.name, self.host, self.port, self.routes, self.token = name, host, int(port), routes, token
        self.service = AsyncService(name)
        self.refused = 0
        self._runner: Any = None

    @property
    def url(self) -> str:
        """A URL that opens the server: a wildcard bind (0.0.0.0, ::) names this machine instead."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def _authorised(self, request: Any) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token") or _bearer(request.headers.get("Authorization", ""))
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _app(self) -> Any:
        web = self.web

        @web.middleware
        async def auth(request, handler):
            if not self._authorised(request):
                self.refused += 1
                raise web.HTTPUnauthorized(
                    text="a token is required (Authorization: Bearer <token> or ?token=)\n"
                )
            return await handler(request)

        app = web.Application(middlewares=[auth])
        app.add_routes(
            [
                web.post(path[5:], handler) if path.startswith("POST ") else web.get(path, handler)
                for path, handler in self.routes.items()
            ]
        )  # "POST /x": a write route (review_page.py)
        return app

    async def _setup(self) -> None:
        self._runner = self.web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = self.web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=0.5)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise OSError(
                e.errno, f"cannot listen on {self.host}:{self.port} ({e.strerror or e}): is the port in use?"
            ) from None
        if self.port == 0:  # a free port was asked for: report the one given
            self.port = int(self._runner.addresses[0][1])

    def start(self) -> None:
        """Listen now; a port in use raises OSError (the sink's guard logs it and the loop goes on)."""
        self.service.start(self._setup)
        LOG.info("%s: serving %s%s", self.name, self.url, " (token required)" if self.token else "")

    def stop(self) -> None:
        self.service.stop(self._runner.cleanup if self._runner is not None else None)
        self._runner = None


def _bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (str.removeprefix is Python 3.9+)."""
    return (header[len("Bearer ") :] if header.startswith("Bearer ") else header).strip()
