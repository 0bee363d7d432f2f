"""Each reject trigger, and each missed reject, POSTed as JSON to an HTTP(S) endpoint by a worker
thread from a bounded queue (urllib; the loop never waits on the network).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from typing import Any, Optional
from urllib.parse import urlsplit

from ..sink import BaseSink
from .signals import SignalError, payload

LOG = logging.getLogger("defectdet.inspect")


class WebhookSignal(BaseSink):
    """POST each trigger's JSON to ``url`` from a worker thread (urllib; a bounded queue: never blocks
    the loop)."""

    name = "webhook"

    def __init__(
        self, url: str, *, timeout_s: float = 2.0, queue_size: int = 100, headers: Optional[dict] = None
    ):
        if urlsplit(str(url)).scheme not in ("http", "https"):
            raise SignalError(f"webhook url={url!r}: expected an http:// or https:// URL")
        self.url, self.timeout_s = str(url), float(timeout_s)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sent = self.failed = self.dropped = 0
        self._q: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=int(queue_size))
        self._thread = threading.Thread(target=self._work, name="webhook", daemon=True)
        self._thread.start()

    def emit(self, result: Any) -> None:
        if result.trigger:
            self._put(payload(result))

    def missed_reject(self, record: dict) -> None:
        self._put(json.dumps(record, separators=(",", ":")).encode())

    def _put(self, body: bytes) -> None:
        try:
            self._q.put_nowait(body)
        except queue.Full:
            self.dropped += 1
            raise OSError(
                f"webhook {self.url}: {self._q.maxsize} messages waiting; this one dropped"
            ) from None

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def _work(self) -> None:
        while True:
            body = self._q.get()
            if body is None:
                return
            req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                self.sent += 1
            except Exception as e:  # network errors of every kind: counted and logged, the worker goes on
                self.failed += 1
                LOG.warning("webhook %s: POST failed (%s: %s)", self.url, e.__class__.__name__, e)

    def close(self, timeout: float = 1.0) -> None:
        """Let queued posts go out for up to ``timeout`` seconds, then stop the worker."""
        deadline = time.monotonic() + timeout
        while not self._q.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self._q.put(None, timeout=max(0.0, deadline - time.monotonic()) or 0.01)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
