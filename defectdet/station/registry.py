"""The one place the station's outputs are registered: a section of ``configs/inspect.yaml`` -> a Sink.

Each :class:`SinkEntry` names its config section (dotted when nested: ``signals.mqtt``), every key
of that section with its default (``defectdet inspect``'s defaults are taken from here), the key
that switches it on, and a builder ``(section, context) -> Sink | None`` that calls its sink's
constructor with keyword arguments. The order of :data:`SINKS` only orders ``summary.json``'s
``sinks`` block, where nothing else decides: the loop emits in :func:`~defectdet.station.sink.emit_order`
(a sink that adds a field of the frame's result before the sinks that read it), and what one
builder needs from another's section (the page's review view) comes from :func:`build_sinks`.

To add an output (a PLC, a web page, a metrics endpoint): write a
:class:`~defectdet.station.sink.BaseSink` subclass in :mod:`defectdet.station.outputs`, add one
entry to :data:`SINKS`, and declare its keys in :mod:`defectdet.settings.inspect` (CONTRIBUTING.md
lists every place). Builders import their sink's module, and any library it needs, only when the
section is enabled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..artifact import Thresholds
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
    thresholds: Optional[Thresholds] = None  # the operating thresholds the Decider uses (Detector.operating)
    review: Optional[Path] = None  # the review queue's folder when it is enabled (the page's review view)


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
        quota_mb=s.number("quota_mb"),
        raw=s["raw"],
        annotated=s["annotated"],
        raw_format=s["raw_format"],
        annotated_format=s["annotated_format"],
        jpeg_quality=s.number("jpeg_quality", int),
        queue=s.number("queue", int),
        block=not ctx.live,
        min_free_mb=s.number("min_free_mb"),
    )


def _events(s: Section, ctx: SinkContext) -> Sink:
    from .sinks import EventLog

    return EventLog(ctx.out / s["file"], max_bytes=int(s.number("max_mb") * 2**20), fsync=s["fsync"])


def _tally(s: Section, ctx: SinkContext) -> Sink:
    from .tally import Tally

    return Tally(ctx.out / s["file"], every_s=s.number("every_s"))


def _record(s: Section, ctx: SinkContext) -> Sink:
    from .sinks import VideoRecorder

    return VideoRecorder(ctx.out / s["file"], fps=s.number("fps"), fourcc=s["fourcc"], only_ng=s["only_ng"])


def _stdout(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.signals import StdoutSignal

    return StdoutSignal()


def _gpio(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.gpio import GpioSignal

    return GpioSignal(
        pin=s.number("pin", int), pulse_ms=s.number("pulse_ms"), mode=s["mode"], active_high=s["active_high"]
    )


def _mqtt(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.mqtt import MqttSignal

    options = {k: v for k, v in s.items() if k != "enabled"}
    return MqttSignal(**{**options, "port": s.number("port", int), "keepalive": s.number("keepalive", int)})


def _webhook(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.webhook import WebhookSignal

    return WebhookSignal(s["url"], timeout_s=s.number("timeout_s"), queue_size=s.number("queue", int))


def _modbus(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.modbus import ModbusOutput

    alarm = None if s["alarm_coil"] is None else s.number("alarm_coil", int)
    return ModbusOutput(
        host=str(s["host"]),
        port=s.number("port", int),
        unit=s.number("unit", int),
        reject_coil=s.number("reject_coil", int),
        alarm_coil=alarm,
        pulse_ms=s.number("pulse_ms"),
        alarm_ms=s.number("alarm_ms"),
        registers=s.number("registers", int),
        update_s=s.number("update_s"),
        timeout_s=s.number("timeout_s"),
        backoff_s=s.number("backoff_s"),
        backoff_max_s=s.number("backoff_max_s"),
        max_delay_ms=s.number("max_delay_ms"),
        queue_size=s.number("queue", int),
        safety=ctx.safety,
    )


def _metrics(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.live import exposure_token, parse_bind
    from .outputs.metrics import MetricsEndpoint

    host, port = parse_bind(f"{s.key}.bind", s["bind"])
    return MetricsEndpoint(
        host=host,
        port=port,
        model_id=str(ctx.info.get("model", "")),
        token=exposure_token(s.key, host, s["token_env"]),
        status=ctx.status,
    )


def _page(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.live import exposure_token, parse_bind
    from .outputs.page import OperatorPage

    host, port = parse_bind(f"{s.key}.bind", s["bind"])
    page = OperatorPage(
        host=host,
        port=port,
        token=exposure_token(s.key, host, s["token_env"]),
        info=ctx.info,
        status=ctx.status,
        stream_fps=s.number("stream_fps"),
        stream_width=s.number("stream_width", int),
        jpeg_quality=s.number("jpeg_quality", int),
        keep_ng=s.number("keep_ng", int),
        write_timeout_s=s.number("write_timeout_s"),
    )
    if ctx.review is not None:  # the review view and its write routes (defectdet/station/review_page.py)
        from .review_page import attach_review

        attach_review(page.server, str(ctx.review), list(ctx.info.get("names") or []))
    return page


def _opcua(s: Section, ctx: SinkContext) -> Sink:
    from .outputs.opcua import OpcUaServer, check_security

    check_security(
        s.key, s["endpoint"], s["security_policy"], s["certificate"], s["private_key"]
    )  # before the import
    return OpcUaServer(
        endpoint=str(s["endpoint"]),
        security_policy=s["security_policy"],
        certificate=s["certificate"],
        private_key=s["private_key"],
        update_s=s.number("update_s"),
        info=ctx.info,
        status=ctx.status,
    )


def _review(s: Section, ctx: SinkContext) -> Sink:
    from .review import ReviewQueue

    names = dict(enumerate(ctx.info.get("names") or []))
    thresholds = ctx.thresholds or Thresholds.uniform(names, float(ctx.info.get("conf", 0.25)))
    return ReviewQueue(
        ctx.out / s["folder"],
        names=names,
        thresholds=thresholds.vector(),  # (nc,) the Decider's own vector
        budget_mb=s.number("budget_mb"),
        near_band=s.number("near_band"),
        audit_rate=s.number("audit_rate"),
        image_format=str(s["image_format"]),
        queue=s.number("queue", int),
        block=not ctx.live,
        run_id=ctx.info.get("run_id"),
        info={k: ctx.info[k] for k in ("model", "source", "decision") if k in ctx.info},
    )


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


# The order of summary.json's sinks block (the loop emits in sink.emit_order). Defaults are documented
# field by field in configs/inspect.yaml.
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
    thresholds: Optional[Thresholds] = None,
) -> list[Sink]:
    """The sinks a merged config enables, in :data:`SINKS` order. Nothing here touches the output folder yet.

    ``live``: a camera/stream, where e.g. a snapshot writer that falls behind drops snapshots
    rather than hold up the next decision; a file or folder waits instead (every frame is inspected
    anyway). ``stop(reason)`` ends the run (the window's q/Esc); ``status()`` is the loop's summary so
    far and ``info`` what is in force (``model``, ``thresholds``, ``source``), for the line-facing servers;
    ``thresholds`` the operating thresholds themselves (``Detector.operating``: the review queue's)."""
    review = cfg.get("review") or {}
    ctx = SinkContext(
        out=Path(out),
        live=bool(live),
        stop=stop,
        status=status,
        info=dict(info or {}),
        safety=safety,
        thresholds=thresholds,
        review=Path(out) / review["folder"] if review.get("enabled") else None,
    )
    sinks = []
    for entry in entries:
        s = section(cfg, entry.key)
        if s[entry.switch]:
            sink = entry.build(s, ctx)
            if sink is not None:
                sinks.append(sink)
    return sinks
