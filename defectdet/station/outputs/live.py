"""What the line-facing outputs share: live counters, the loop's health, a bind rule, and a server thread.

* :class:`LineCounters` — OK/NG/per-class counts, the last result and recent frames/s and latency,
  updated by a sink's ``emit`` (the loop's thread, a few dict operations) and read by servers on
  other threads; nothing here waits on the network.
* :func:`health` — drops, reconnects and sink errors from the loop's own summary (``status``).
* :func:`parse_bind` / :func:`exposure_token` — ``host:port``; anything but loopback needs a token.
* :class:`AsyncService` — an asyncio loop on a daemon thread that starts one server (aiohttp,
  asyncua) and reports a failure to start (a port in use) to the caller of :meth:`start`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from typing import Any, Awaitable, Callable, Mapping, Optional

import numpy as np

from ...errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
LATENCY_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def top_defect(result: Any) -> tuple[str, float]:
    """The class and confidence of a frame's most confident defect ('', 0.0 for none)."""
    d = result.decision.defects
    if not len(d.confidence):
        return "", 0.0
    i = int(np.argmax(d.confidence))
    return str(d.class_name[i]), float(d.confidence[i])


class LineCounters:
    """Counts of a run as the outputs see it (thread-safe; :meth:`add` is cheap)."""

    def __init__(self, window: int = 256):
        self._lock = threading.Lock()
        self.frames = self.ok = self.ng = self.parts_ng = 0
        self.per_class: collections.Counter[str] = collections.Counter()  # NG frames per defect class
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # last one: above the largest bucket
        self.latency_sum_ms = 0.0
        self.last: dict[str, Any] = {}  # the last frame's result
        self.last_ng: dict[str, Any] = {}  # the last NG frame's
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)  # (t, ms)

    def add(self, result: Any) -> None:
        """Count one inspected frame."""
        ng, ms = bool(result.decision.ng), float(result.latency_ms)
        cls, conf = top_defect(result) if ng else ("", 0.0)
        with self._lock:
            self.frames += 1
            self.ng += ng
            self.ok += not ng
            self.parts_ng += bool(ng and result.decision.rising)
            self.per_class.update(set(result.decision.defects.class_name.tolist()) if ng else ())
            self.latency_buckets[int(np.searchsorted(LATENCY_BUCKETS_MS, ms))] += 1
            self.latency_sum_ms += ms
            self._recent.append((time.monotonic(), ms))
            self.last = {
                "result": "NG" if ng else "OK",
                "class": cls,
                "confidence": round(conf, 4),
                "frame": int(result.frame.index),
                "ts": float(result.frame.timestamp),
            }
            if ng:
                self.last_ng = self.last

    def read(self) -> dict[str, Any]:
        """A consistent copy: counts, yield, per-class counts, the last result, recent fps and latency."""
        with self._lock:
            out = {
                "frames": self.frames,
                "ok": self.ok,
                "ng": self.ng,
                "parts_ng": self.parts_ng,
                "per_class": dict(self.per_class),
                "last": dict(self.last),
                "last_ng": dict(self.last_ng),
                "latency_buckets": list(self.latency_buckets),
                "latency_sum_ms": self.latency_sum_ms,
            }
            recent = list(self._recent)
        out["yield"] = round(out["ok"] / out["frames"], 4) if out["frames"] else None
        ms = np.array([m for _, m in recent])
        out["fps"] = (
            round((len(recent) - 1) / max(recent[-1][0] - recent[0][0], 1e-9), 2) if len(recent) > 1 else 0.0
        )
        out["latency_p50_ms"] = round(float(np.percentile(ms, 50)), 2) if len(ms) else None
        out["latency_p99_ms"] = round(float(np.percentile(ms, 99)), 2) if len(ms) else None
        return out


def health(status: Optional[Callable[[], Mapping[str, Any]]]) -> dict[str, Any]:
    """Drops, reconnects and sink errors from the loop's summary (zeros before the loop runs)."""
    try:
        s = dict(status()) if status else {}
    except Exception:  # the loop is between states (starting, closing): report nothing rather than fail
        s = {}
    errors = sum(int(v.get("errors") or 0) for v in (s.get("sinks") or {}).values() if isinstance(v, Mapping))
    return {
        "dropped": int(s.get("dropped_frames") or 0),
        "reconnects": int(s.get("reconnects") or 0),
        "sink_errors": errors,
        "detector_errors": int(s.get("detector_errors") or 0),
    }


def parse_bind(key: str, bind: Any) -> tuple[str, int]:
    """``'127.0.0.1:8080'`` -> ('127.0.0.1', 8080); ``'[::1]:8080'`` for IPv6; else a ConfigError."""
    host, sep, port = str(bind).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}={bind!r}: expected host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


def exposure_token(key: str, host: str, token_env: Optional[str]) -> Optional[str]:
    """The access token for a server on ``host``: None on loopback without one; required beyond loopback."""
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise ConfigError(f"{key}.token_env={token_env!r}: that environment variable is not set")
    if host not in LOOPBACK and not token:
        raise ConfigError(
            f"{key}.bind on {host!r} (beyond 127.0.0.1) needs an access token: set {key}.token_env "
            "to an environment variable holding it"
        )
    return token


class AsyncService:
    """An asyncio event loop on a daemon thread, for one server."""

    def __init__(self, name: str):
        self.name = name
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, setup: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
        """Start the loop and run ``setup()`` on it; its exception (``OSError``: port in use) is raised."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        try:
            return self.run(setup(), timeout)
        except BaseException:
            self.stop()
            raise

    def run(self, coro: Awaitable[Any], timeout: float) -> Any:
        """Run ``coro`` on the service's loop from another thread and wait up to ``timeout`` s for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def spawn(self, coro: Awaitable[Any]) -> Any:
        """Schedule ``coro`` on the service's loop without waiting."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def stop(self, cleanup: Optional[Callable[[], Awaitable[Any]]] = None, timeout: float = 3.0) -> None:
        """Run ``cleanup()`` (errors ignored: the run is ending), then stop the loop and its thread."""
        if self.loop is None:
            return
        if cleanup is not None and self.loop.is_running():
            try:
                self.run(cleanup(), timeout)
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.loop.is_running():
            self.loop.close()
        self.loop = None
