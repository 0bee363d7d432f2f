"""The operator page (``defectdet inspect --serve 127.0.0.1:8080``): a read-only web view of the line.

Routes (GET only; served by aiohttp from its own thread, see :mod:`.web`):

* ``/`` — the page (:data:`~.page_html.PAGE`): the live stream, OK/NG/yield, NG per class, the last
  NG parts, the model and thresholds in force, health, and line safety (a red banner once a reject
  was missed or inspection halted; ready, missed rejects, PLC link), and a link to the review view
  when it is on (``/review``); it polls ``/api/state`` once a second;
* ``/api/state`` — that state as JSON;
* ``/stream.mjpg`` — the annotated stream as MJPEG, at most ``stream_fps`` frames/s per client;
* ``/ng/<id>.jpg`` — one of the last ``keep_ng`` NG parts (its first NG frame, annotated).

The loop's only work is :meth:`OperatorPage.emit`: count, and keep a reference to the newest result
(and to each new NG part's). Drawing and JPEG encoding happen on the server's thread pool, once per
streamed frame whatever the number of clients; a client that reads nothing for ``write_timeout_s``
is disconnected with one log line. A frame the stream skips is never waited for.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import socket
from typing import Any, Callable, Mapping, Optional

import cv2

from ..safety import LineSafety
from ..sink import BaseSink
from .live import LineCounters, health, top_defect
from .page_html import PAGE, REVIEW_LINK
from .web import HttpServer

LOG = logging.getLogger("defectdet.inspect")
STREAM_SNDBUF = (
    64 * 1024
)  # a small send buffer: the stream stays near live, and a stalled client is seen quickly


def encode_jpeg(image: Any, width: int, quality: int) -> bytes:
    """``image`` (BGR) scaled down to at most ``width`` pixels wide, as JPEG bytes."""
    if width and image.shape[1] > width:
        image = cv2.resize(
            image, (width, round(image.shape[0] * width / image.shape[1])), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode a JPEG")
    return buf.tobytes()


class OperatorPage(BaseSink):
    """The page's server and the state it shows (see the module docstring)."""

    name = "page"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: Optional[str] = None,
        info: Optional[Mapping[str, Any]] = None,
        status: Optional[Callable[[], Mapping[str, Any]]] = None,
        stream_fps: float = 5.0,
        stream_width: int = 960,
        jpeg_quality: int = 75,
        keep_ng: int = 8,
        write_timeout_s: float = 5.0,
    ):
        self.info, self.status = dict(info or {}), status
        self.stream_fps, self.stream_width, self.quality = (
            max(float(stream_fps), 0.1),
            int(stream_width),
            int(jpeg_quality),
        )
        self.write_timeout_s = float(write_timeout_s)
        self.counters = LineCounters()
        self.safety = LineSafety()  # the loop hands its own: missed rejects, alarm, ready, PLC links
        self._latest: Any = None
        self._ng: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(int(keep_ng), 1))
        self._ids = itertools.count(1)
        self._encoded: tuple[Any, bytes] = (None, b"")  # (result, its JPEG): encoded once for every client
        self.streamed = self.clients = self.slow_clients = 0
        self._closing = False
        routes = {
            "/": self._page,
            "/api/state": self._state,
            "/stream.mjpg": self._stream,
            "/ng/{id}.jpg": self._ng_image,
        }
        self.server = HttpServer("page", host, port, routes, token)

    # -- the loop's side -------------------------------------------------------------------------
    def open(self) -> None:
        self.server.start()

    def emit(self, result: Any) -> None:
        self.counters.add(result)
        self._latest = result
        if result.decision.ng and result.decision.rising:
            cls, conf = top_defect(result)
            self._ng.append(
                {
                    "id": next(self._ids),
                    "frame": int(result.frame.index),
                    "ts": float(result.frame.timestamp),
                    "class": cls,
                    "confidence": round(conf, 4),
                    "result": result,
                    "jpeg": None,
                }
            )

    def close(self) -> None:
        self._closing = True
        self.server.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "streamed": self.streamed,
            "slow_clients": self.slow_clients,
            "refused": self.server.refused,
            "url": self.server.url + "/",
        }  # opens the page (a wildcard bind names this machine)

    # -- the server's side -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What ``/api/state`` returns."""
        now = self.counters.read()
        now.pop("latency_buckets"), now.pop("latency_sum_ms")
        ng = [{k: v for k, v in e.items() if k not in ("result", "jpeg")} for e in reversed(self._ng)]
        return {
            **now,
            "health": {**health(self.status), "stream_clients": self.clients},
            "ng_parts": ng,
            "safety": self.safety.state(),
            "run_id": getattr(self._latest, "run_id", ""),
            "model": self.info.get("model", ""),
            "source": self.info.get("source", ""),
            "conf": self.info.get("conf"),
            "thresholds": self.info.get("thresholds", {}),
            "decision": self.info.get("decision", {}),
        }

    async def _page(self, request: Any) -> Any:
        review = "/review" in self.server.routes  # the review view is attached (review_page.attach_review)
        text = PAGE.replace("<!--review-->", REVIEW_LINK if review else "")
        return self.server.web.Response(text=text, content_type="text/html")

    async def _state(self, request: Any) -> Any:
        body = json.dumps(self.state(), default=str)
        return self.server.web.Response(
            text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def _ng_image(self, request: Any) -> Any:
        web = self.server.web
        entry = next((e for e in list(self._ng) if str(e["id"]) == request.match_info["id"]), None)
        if entry is None:
            raise web.HTTPNotFound(text="no such NG part (only the last ones are kept)\n")
        if entry["jpeg"] is None:
            entry["jpeg"] = await asyncio.get_running_loop().run_in_executor(
                None, lambda: encode_jpeg(entry["result"].annotated(), 480, self.quality)
            )
        return web.Response(
            body=entry["jpeg"], content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
        )

    async def _jpeg(self, result: Any) -> bytes:
        if self._encoded[0] is not result:
            jpeg = await asyncio.get_running_loop().run_in_executor(
                None, lambda: encode_jpeg(result.annotated(), self.stream_width, self.quality)
            )
            self._encoded = (result, jpeg)
        return self._encoded[1]

    async def _stream(self, request: Any) -> Any:
        web = self.server.web
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame", "Cache-Control": "no-store"}
        )
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        await resp.prepare(request)
        self.clients += 1
        try:
            await self._send_frames(request, resp)
        finally:
            self.clients -= 1
        return resp

    async def _send_frames(self, request: Any, resp: Any) -> None:
        sent = None
        while not self._closing:
            result = self._latest
            if result is not None and result is not sent:
                jpeg = await self._jpeg(result)
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    len(jpeg),
                    jpeg,
                )
                try:
                    await asyncio.wait_for(resp.write(part), self.write_timeout_s)
                except asyncio.TimeoutError:
                    self.slow_clients += 1
                    LOG.warning(
                        "page: stream client %s read nothing for %.0f s; disconnected (the loop never "
                        "waited for it)",
                        request.remote,
                        self.write_timeout_s,
                    )
                    if request.transport is not None:
                        request.transport.abort()
                    return
                except (ConnectionError, RuntimeError):  # the browser went away
                    return
                sent = result
                self.streamed += 1
            await asyncio.sleep(1.0 / self.stream_fps)
