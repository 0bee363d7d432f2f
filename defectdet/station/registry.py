"""The one place the station's outputs are registered: a section of ``configs/inspect.yaml`` -> a Sink.

Each :class:`SinkEntry` names its config section (dotted when nested: ``signals.mqtt``), every key
of that section with its default (``defectdet inspect``'s defaults are taken from here), the key
that switches it on, and a builder ``(section, context) -> Sink | None``. :data:`SINKS` lists them
in emit order: snapshots first (their file names go into the event), the event log, the video,
the reject/alarm outputs, the window last.

To add an output (a PLC, a web page, a metrics endpoint): write a
:class:`~defectdet.station.sink.BaseSink` subclass, add one entry to :data:`SINKS`, and document
its keys in ``configs/inspect.yaml`` (a test keeps the two in step). Builders import their sink's
module, and any library it needs, only when the section is enabled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..settings import Range
from .sink import Sink

LOG = logging.getLogger("defectdet.inspect")


@dataclass(frozen=True)
class SinkContext:
    """What a builder may need besides its section."""

    out: Path  # the run's output folder (nothing is created in it at build time)
    live: bool = (
        True  # a camera/stream: a sink that falls behind drops work rather than hold up the next decision
    )
    stop: Optional[Callable[[str], None]] = None  # asks the loop to end, with a reason (a window's q key)
    status: Optional[Callable[[], Mapping[str, Any]]] = None  # the loop's summary so far (health for servers)
    info: Mapping[str, Any] = field(default_factory=dict)  # what is in force: model id, thresholds, source
    safety: Any = (
        None  # the run's LineSafety (missed rejects, alarm, ready); the loop also hands it to every sink
    )


class Section(dict):
    """One config section, knowing its dotted key so that a bad value names it."""

    def __init__(self, key: str, values: Mapping[str, Any]):
        super().__init__(values)
        self.key = key

    def number(self, name: str, kind: type = float) -> Any:
        """``self[name]`` as ``kind`` (int or float); anything else is a one-line ConfigError (the merged
        config was checked against the key's declared range already: defectdet/settings/inspect.py)."""
        return Range(kind, None).check(f"{self.key}.{name}", self[name])


@dataclass(frozen=True)
class SinkEntry:
    """One output: its config section, that section's defaults, and how to build it."""

    key: str  # dotted section of configs/inspect.yaml
    defaults: Mapping[str, Any]  # every key of the section with its default
    build: Callable[[Section, SinkContext], Optional[Sink]]  # None: not available here (the builder logs why)
    switch: str = "enabled"  # the boolean key that turns the output on


def _snapshots(s: Section, ctx: SinkContext) -> Sink:
    from .snapshots import Snapshots

    return Snapshots(
        ctx.out / s["folder"],
        s.number("quota_mb"),
        s["raw"],
        s["annotated"],
        s["raw_format"],
        s["annotated_format"],
        s.number("jpeg_quality", int),
        s.number("queue", int),
        block=not ctx.live,
        min_free_mb=s.number("min_free_mb"),
    )


def _events(s: Section, ctx: SinkContext) -> Sink:
    from .sinks import EventLog

    return EventLog(ctx.out / s["file"], int(s.number("max_mb") * 2**20), s["fsync"])


def _tally(s: Section, ctx: SinkContext) -> Sink:
    from .tally import Tally

    return Tally(ctx.out / s["file"], s.number("every_s"))


def _record(s: Section, ctx: SinkContext) -> Sink:
    from .sinks import VideoRecorder

    return VideoRecorder(ctx.out / s["file"], s.number("fps"), s["fourcc"], s["only_ng"])


def _stdout(s: Section, ctx: SinkContext) -> Sink:
    from .signals import StdoutSignal

    return StdoutSignal()


def _gpio(s: Section, ctx: SinkContext) -> Sink:
    from .signals import GpioSignal

    return GpioSignal(s.number("pin", int), s.number("pulse_ms"), s["mode"], s["active_high"])


def _mqtt(s: Section, ctx: SinkContext) -> Sink:
    from .signals import MqttSignal

    options = {k: v for k, v in s.items() if k != "enabled"}
    return MqttSignal(**{**options, "port": s.number("port", int), "keepalive": s.number("keepalive", int)})


def _webhook(s: Section, ctx: SinkContext) -> Sink:
    from .signals import WebhookSignal

    return WebhookSignal(s["url"], s.number("timeout_s"), s.number("queue", int))


def _modbus(s: Section, ctx: SinkContext) -> Sink:
    from .modbus import ModbusOutput

    alarm = None if s["alarm_coil"] is None else s.number("alarm_coil", int)
    return ModbusOutput(
        str(s["host"]),
        s.number("port", int),
        s.number("unit", int),
        s.number("reject_coil", int),
        alarm,
        s.number("pulse_ms"),
        s.number("alarm_ms"),
        s.number("registers", int),
        s.number("update_s"),
        s.number("timeout_s"),
        s.number("backoff_s"),
        s.number("backoff_max_s"),
        s.number("max_delay_ms"),
        s.number("queue", int),
        safety=ctx.safety,
    )


def _metrics(s: Section, ctx: SinkContext) -> Sink:
    from .live import exposure_token, parse_bind
    from .metrics import MetricsEndpoint

    host, port = parse_bind(f"{s.key}.bind", s["bind"])
    return MetricsEndpoint(
        host, port, str(ctx.info.get("model", "")), exposure_token(s.key, host, s["token_env"]), ctx.status
    )


def _page(s: Section, ctx: SinkContext) -> Sink:
    from .live import exposure_token, parse_bind
    from .page import OperatorPage

    host, port = parse_bind(f"{s.key}.bind", s["bind"])
    page = OperatorPage(
        host,
        port,
        exposure_token(s.key, host, s["token_env"]),
        ctx.info,
        ctx.status,
        s.number("stream_fps"),
        s.number("stream_width", int),
        s.number("jpeg_quality", int),
        s.number("keep_ng", int),
        s.number("write_timeout_s"),
    )
    if "review" in ctx.info:  # the review view and its write routes (defectdet/station/review_page.py)
        from .review_page import attach_review

        attach_review(page.server, ctx.info["review"]["folder"], ctx.info["review"]["names"])
    return page


def _opcua(s: Section, ctx: SinkContext) -> Sink:
    from .opcua import OpcUaServer, check_security

    check_security(
        s.key, s["endpoint"], s["security_policy"], s["certificate"], s["private_key"]
    )  # before the import
    return OpcUaServer(
        str(s["endpoint"]),
        s["security_policy"],
        s["certificate"],
        s["private_key"],
        s.number("update_s"),
        ctx.info,
        ctx.status,
    )


def _review(s: Section, ctx: SinkContext) -> Sink:
    from .review import ReviewQueue

    names, thr = list(ctx.info.get("names") or []), dict(ctx.info.get("thresholds") or {})
    folder = ctx.out / s["folder"]
    queue = ReviewQueue(
        folder,
        dict(enumerate(names)),
        [float(thr.get(n, ctx.info.get("conf", 0.25))) for n in names],
        s.number("budget_mb"),
        s.number("near_band"),
        s.number("audit_rate"),
        str(s["image_format"]),
        s.number("queue", int),
        block=not ctx.live,
        run_id=ctx.info.get("run_id"),
        info={k: ctx.info[k] for k in ("model", "source", "decision") if k in ctx.info},
    )
    ctx.info["review"] = {"folder": str(folder), "names": names}  # the page's review view (built after this)
    return queue


def _shadow(s: Section, ctx: SinkContext) -> Sink:
    from .shadow import open_shadow

    return open_shadow(s, ctx)


def _window(s: Section, ctx: SinkContext) -> Optional[Sink]:
    from .sinks import Window, display_available

    if not display_available():
        LOG.warning(
            "display.show is set but there is no display (DISPLAY/WAYLAND_DISPLAY unset): running headless"
        )
        return None
    stop = ctx.stop
    return Window(on_quit=(lambda: stop("window closed")) if stop else None)


# In emit order. Defaults are documented field by field in configs/inspect.yaml. The review queue and the
# shadow come after the reject outputs, and the review queue before the page (whose review view it enables).
SINKS: tuple[SinkEntry, ...] = (
    SinkEntry(
        "snapshots",
        {
            "enabled": True,
            "folder": "snapshots",
            "quota_mb": 500.0,
            "raw": True,
            "annotated": True,
            "raw_format": "png",
            "annotated_format": "jpg",
            "jpeg_quality": 90,
            "queue": 8,
            "min_free_mb": 100.0,
        },
        _snapshots,
    ),
    SinkEntry("events", {"enabled": True, "file": "events.jsonl", "max_mb": 50.0, "fsync": True}, _events),
    SinkEntry("tally", {"enabled": True, "file": "tally.jsonl", "every_s": 60.0}, _tally),
    SinkEntry(
        "record",
        {"enabled": False, "file": "annotated.mp4", "fps": 15.0, "fourcc": "mp4v", "only_ng": False},
        _record,
    ),
    SinkEntry("signals.stdout", {"enabled": False}, _stdout),
    SinkEntry(
        "signals.gpio",
        {"enabled": False, "pin": 18, "pulse_ms": 100.0, "mode": "BOARD", "active_high": True},
        _gpio,
    ),
    SinkEntry(
        "signals.mqtt",
        {
            "enabled": False,
            "host": "127.0.0.1",
            "port": 1883,
            "topic": "defectdet/ng",
            "qos": 1,
            "client_id": None,
            "username": None,
            "password_env": None,
            "keepalive": 30,
            "tls": False,
            "retain": False,
        },
        _mqtt,
    ),
    SinkEntry("signals.webhook", {"enabled": False, "url": None, "timeout_s": 2.0, "queue": 100}, _webhook),
    SinkEntry(
        "signals.modbus",
        {
            "enabled": False,
            "host": "127.0.0.1",
            "port": 502,
            "unit": 1,
            "reject_coil": 0,
            "alarm_coil": 1,
            "pulse_ms": 200.0,
            "alarm_ms": 1000.0,
            "registers": 0,
            "update_s": 0.5,
            "timeout_s": 1.0,
            "backoff_s": 0.5,
            "backoff_max_s": 10.0,
            "max_delay_ms": 500.0,
            "queue": 64,
        },
        _modbus,
    ),
    SinkEntry(
        "opcua",
        {
            "enabled": False,
            "endpoint": "opc.tcp://127.0.0.1:4840/defectdet",
            "security_policy": "none",
            "certificate": None,
            "private_key": None,
            "update_s": 0.5,
        },
        _opcua,
    ),
    SinkEntry("metrics", {"enabled": False, "bind": "127.0.0.1:9108", "token_env": None}, _metrics),
    SinkEntry(
        "review",
        {
            "enabled": False,
            "folder": "review",
            "budget_mb": 500.0,
            "near_band": 0.1,
            "audit_rate": 0.002,
            "image_format": "png",
            "queue": 16,
        },
        _review,
    ),
    SinkEntry(
        "shadow",
        {"model": None, "thresholds": None, "backend": "auto", "file": "shadow.jsonl", "log_agreeing": False},
        _shadow,
        switch="model",
    ),
    SinkEntry(
        "page",
        {
            "enabled": False,
            "bind": "127.0.0.1:8080",
            "token_env": None,
            "stream_fps": 5.0,
            "stream_width": 960,
            "jpeg_quality": 75,
            "keep_ng": 8,
            "write_timeout_s": 5.0,
        },
        _page,
    ),
    SinkEntry("display", {"show": False}, _window, switch="show"),
)


def sink_defaults(entries: tuple[SinkEntry, ...] = SINKS) -> dict[str, Any]:
    """The config sections of ``entries`` with their defaults, nested by dotted key."""
    out: dict[str, Any] = {}
    for entry in entries:
        *parents, leaf = entry.key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if leaf in node:
            raise ValueError(f"sink section {entry.key!r} is registered twice")
        node[leaf] = dict(entry.defaults)
    return out


def section(cfg: Mapping[str, Any], key: str) -> Section:
    """The section of a merged config at a dotted ``key``."""
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return Section(key, node)


def build_sinks(
    cfg: Mapping[str, Any],
    out: str | Path,
    live: bool = True,
    stop: Optional[Callable[[str], None]] = None,
    entries: tuple[SinkEntry, ...] = SINKS,
    status: Optional[Callable[[], Mapping[str, Any]]] = None,
    info: Optional[Mapping[str, Any]] = None,
    safety: Any = None,
) -> list[Sink]:
    """The sinks a merged config enables, in emit order. Nothing here touches the output folder yet.

    ``live``: a camera/stream, where e.g. a snapshot writer that falls behind drops snapshots
    rather than hold up the next decision; a file or folder waits instead (every frame is inspected
    anyway). ``stop(reason)`` ends the run (the window's q/Esc); ``status()`` is the loop's summary so
    far and ``info`` what is in force (``model``, ``thresholds``, ``source``), for the line-facing servers."""
    ctx = SinkContext(Path(out), bool(live), stop, status, dict(info or {}), safety)
    sinks = []
    for entry in entries:
        s = section(cfg, entry.key)
        if s[entry.switch]:
            sink = entry.build(s, ctx)
            if sink is not None:
                sinks.append(sink)
    return sinks
