"""The review view of the operator page: the operator confirms or corrects the review queue's items.

Routes, added to the page's server (:mod:`.page`) when ``review.enabled`` is on:

* ``GET /review`` — the view (:data:`~.review_html.REVIEW_PAGE`);
* ``GET /api/review/items`` — the queued items, newest first, each with its latest verdict;
* ``GET /review/img/<id>`` — an item's full-resolution frame;
* ``POST /api/review/<id>`` — a verdict, JSON: ``{"verdict": "defect" | "ok" | "skip", "boxes":
  [{"class": name, "xyxy": [x1, y1, x2, y2], "origin": "model" | "drawn"}], "who": name}``.
  ``defect``: the defects on the frame (the model's boxes the operator confirmed, with their class
  corrected where needed, and boxes drawn round defects the model missed; a class may be new);
  ``ok``: no defect on the frame (on an NG item: a false reject); ``skip``: cannot tell.

Every write needs the page token, also on loopback: in an ``X-Defectdet-Token`` header (or
``Authorization: Bearer``, or the body's ``token``), never a cookie, and only with a JSON body, so
no other browser tab or site can write (a cross-site request can neither read the token nor send
that header or body without a CORS preflight, which this server never grants). Without a token:
401; a wrong one: 403; there are no writes by GET. A page without ``page.token_env`` gets a token
made for the run, in ``<review folder>/token`` (mode 0600, the path logged at start).

Verdicts are appended to ``<review folder>/review.jsonl`` (one JSON line each, with who, when and
from where; the latest line of an item wins) on the server's thread pool: a review never waits
on, or holds up, the inspection loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..review_log import read_log
from .result import utc_iso
from .review_html import REVIEW_PAGE

LOG = logging.getLogger("defectdet.inspect")
VERDICTS = ("defect", "ok", "skip")
CLASS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$")
MAX_BODY = 64 * 1024


class BadVerdict(ValueError):
    """A verdict body that cannot be logged (the message says why)."""


def check_verdict(body: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A POSTed verdict on the item ``meta`` -> the fields to log; else :class:`BadVerdict`."""
    if not isinstance(body, dict):
        raise BadVerdict("expected a JSON object")
    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        raise BadVerdict(f"verdict={verdict!r}: expected one of {', '.join(VERDICTS)}")
    boxes = body.get("boxes") or []
    if not isinstance(boxes, list) or len(boxes) > 100:
        raise BadVerdict("boxes: expected a list of at most 100 boxes")
    out = [_box(i, b, float(meta["width"]), float(meta["height"])) for i, b in enumerate(boxes)]
    if verdict == "defect" and not out:
        raise BadVerdict("verdict 'defect' needs at least one box (confirm the model's or draw one)")
    if verdict != "defect" and out:
        raise BadVerdict(f"verdict {verdict!r} takes no boxes")
    who = body.get("who") or "operator"
    if not isinstance(who, str) or len(who) > 64:
        raise BadVerdict("who: expected a name of at most 64 characters")
    return {"verdict": verdict, "boxes": out, "who": who.strip() or "operator"}


def _box(i: int, box: Any, w: float, h: float) -> dict[str, Any]:
    if not isinstance(box, dict):
        raise BadVerdict(f"boxes[{i}]: expected an object with class and xyxy")
    name = box.get("class")
    if not isinstance(name, str) or not CLASS_NAME.match(name):
        raise BadVerdict(
            f"boxes[{i}].class={name!r}: expected a class name (letters, digits, _ - . space; <= 64)"
        )
    xyxy = box.get("xyxy")
    try:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
    except (TypeError, ValueError):
        raise BadVerdict(f"boxes[{i}].xyxy={xyxy!r}: expected four numbers [x1, y1, x2, y2]") from None
    x1, x2, y1, y2 = max(x1, 0.0), min(x2, w), max(y1, 0.0), min(y2, h)  # a drag past the edge is clipped
    if not (x2 - x1 >= 1 and y2 - y1 >= 1):
        raise BadVerdict(
            f"boxes[{i}].xyxy={xyxy!r}: expected x2 > x1 and y2 > y1 inside the {w:g}x{h:g} frame"
        )
    origin = box.get("origin", "model")
    if origin not in ("model", "drawn"):
        raise BadVerdict(f"boxes[{i}].origin={origin!r}: expected 'model' or 'drawn'")
    return {"class": name, "xyxy": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)], "origin": origin}


class ReviewView:
    """The review routes over one review folder (see the module docstring)."""

    def __init__(
        self,
        web: Any,
        folder: str | os.PathLike,
        names: Sequence[str],
        token: Optional[str] = None,
        limit: int = 500,
    ):
        self.web, self.folder, self.items = web, Path(folder), Path(folder) / "items"
        self.names, self.limit = [str(n) for n in names], int(limit)
        self.log_path = self.folder / "review.jsonl"
        self.token = token or self._run_token()
        self.written = self.refused = 0
        self._lock = threading.Lock()

    def _run_token(self) -> str:
        token = secrets.token_urlsafe(18)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        LOG.info("review: writes on the page need the token in %s (no page.token_env set)", path)
        return token

    def routes(self) -> dict[str, Any]:
        return {
            "/review": self._page,
            "/api/review/items": self._list,
            "/review/img/{id}": self._image,
            "POST /api/review/{id}": self._post,
        }

    # -- reads -----------------------------------------------------------------------------
    def list_items(self) -> list[dict[str, Any]]:
        """The queued items (newest first, at most ``limit``) with their latest verdict."""
        verdicts = read_log(self.log_path)
        out = []
        for path in sorted(self.items.glob("*.json"), reverse=True)[: self.limit]:
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # deleted by the budget meanwhile, or half-written
                continue
            meta.pop("info", None)
            meta["review"] = verdicts.get(meta.get("id", ""))
            out.append(meta)
        return out

    async def _page(self, request: Any) -> Any:
        return self.web.Response(
            text=REVIEW_PAGE, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def _list(self, request: Any) -> Any:
        items = await asyncio.get_running_loop().run_in_executor(None, self.list_items)
        body = json.dumps({"items": items, "names": self.names}, default=str)
        return self.web.Response(
            text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    def _meta(self, item_id: str) -> Optional[dict[str, Any]]:
        if not re.fullmatch(r"[A-Za-z0-9_.]+", item_id) or item_id.startswith("."):
            return None
        try:
            return json.loads((self.items / f"{item_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    async def _image(self, request: Any) -> Any:
        meta = self._meta(request.match_info["id"])
        if meta is None or not (self.items / meta["image"]).is_file():
            raise self.web.HTTPNotFound(text="no such review item (the disk budget may have removed it)\n")
        return self.web.FileResponse(self.items / meta["image"], headers={"Cache-Control": "max-age=3600"})

    # -- the write ------------------------------------------------------------------------------
    def _authorised(self, request: Any, body: Any) -> Optional[Any]:
        """None when the request carries the token; else the 401/403 response to send."""
        auth = request.headers.get("Authorization", "")
        given = request.headers.get("X-Defectdet-Token") or (
            auth[7:].strip() if auth.startswith("Bearer ") else ""
        )
        if not given and isinstance(body, dict) and isinstance(body.get("token"), str):
            given = body["token"]
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        self.refused += 1
        if not given:
            return self.web.HTTPUnauthorized(
                text="review writes need the page token (X-Defectdet-Token header)\n"
            )
        return self.web.HTTPForbidden(text="wrong token\n")

    async def _post(self, request: Any) -> Any:
        web = self.web
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="expected a JSON body (Content-Type: application/json)\n")
        if (request.content_length or 0) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
        try:
            body = json.loads(await request.text())
        except ValueError:
            body = None
        refusal = self._authorised(request, body)
        if refusal is not None:
            raise refusal
        meta = self._meta(request.match_info["id"])
        if meta is None:
            raise web.HTTPNotFound(text="no such review item (the disk budget may have removed it)\n")
        try:
            fields = check_verdict(body, meta)
        except BadVerdict as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        rec = {
            "item": meta["id"],
            "run_id": meta.get("run_id"),
            "model": meta.get("model"),
            "kind": meta.get("kind"),
            "frame": meta.get("frame"),
            **fields,
            "ts": utc_iso(time.time()),
            "remote": request.remote,
        }
        await asyncio.get_running_loop().run_in_executor(None, self._append, rec)
        return web.json_response({"ok": True, "logged": rec})

    def _append(self, rec: dict[str, Any]) -> None:
        line = (json.dumps(rec) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.written += 1


def attach_review(server: Any, folder: str | os.PathLike, names: Sequence[str]) -> ReviewView:
    """Add the review routes to a page's :class:`~.web.HttpServer` before it starts (the page's token)."""
    view = ReviewView(server.web, folder, names, server.token)
    server.routes.update(view.routes())
    return view
