"""A Prometheus ``/metrics`` endpoint for plant IT watching a fleet of stations (prometheus_client + aiohttp).

Every series carries the model id as its ``model`` label:

* ``defectdet_frames_total``, ``defectdet_ok_total``, ``defectdet_ng_total`` — inspected frames;
* ``defectdet_ng_class_total{class=...}`` — NG frames with a defect of that class;
* ``defectdet_dropped_frames_total``, ``defectdet_reconnects_total``, ``defectdet_sink_errors_total``,
  ``defectdet_detector_errors_total`` — the loop's health;
* ``defectdet_latency_seconds`` — a histogram of detector + decision time per frame;
* ``defectdet_fps`` — recent frames per second (a gauge);
* ``defectdet_missed_rejects_total{reason=late|queue_full|unreachable}`` — NG parts whose reject the
  PLC never got (each one may be in the OK bin);
* ``defectdet_alarm`` (1 after a missed reject), ``defectdet_ready`` (1 while frames are inspected
  within ``capture.stall_s`` and inspection is not halted), ``defectdet_plc_up{link=modbus}`` (1 while
  connected) — gauges.

The values are read at scrape time from counters the sink keeps (``emit`` only counts), so a
scrape never touches the loop. prometheus_client and aiohttp are imported when the sink is built.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from ..safety import REASONS, LineSafety
from ..sink import BaseSink
from .live import LATENCY_BUCKETS_MS, LineCounters, health
from .signals import SignalError
from .web import HttpServer

COUNTERS = (  # (name, help, key in LineCounters.read() or health())
    ("frames", "inspected frames", "frames"),
    ("ok", "OK frames", "ok"),
    ("ng", "NG frames", "ng"),
    ("dropped_frames", "frames a live source delivered that the loop never saw", "dropped"),
    ("reconnects", "source reconnections", "reconnects"),
    ("sink_errors", "failed output calls", "sink_errors"),
    ("detector_errors", "frames the detector failed on", "detector_errors"),
)


class Collector:
    """A prometheus_client collector reading a :class:`LineCounters` and the loop's health at scrape time."""

    def __init__(
        self,
        counters: LineCounters,
        model_id: str,
        status: Optional[Callable[[], Mapping[str, Any]]],
        safety: Optional[Callable[[], LineSafety]] = None,
    ):
        from prometheus_client import core

        self.core, self.counters, self.model_id, self.status = core, counters, model_id, status
        self.safety = safety or LineSafety

    def collect(self):
        core, model = self.core, self.model_id
        now = {**self.counters.read(), **health(self.status)}  # not `|`: Python 3.8
        yield from self._safety(self.safety().state())
        for name, help_, key in COUNTERS:
            family = core.CounterMetricFamily(f"defectdet_{name}", help_, labels=["model"])
            family.add_metric([model], now[key])
            yield family
        per_class = core.CounterMetricFamily(
            "defectdet_ng_class", "NG frames with a defect of this class", labels=["model", "class"]
        )
        for cls, n in sorted(now["per_class"].items()):
            per_class.add_metric([model, cls], n)
        yield per_class
        fps = core.GaugeMetricFamily("defectdet_fps", "recent inspected frames per second", labels=["model"])
        fps.add_metric([model], now["fps"])
        yield fps
        cumulative, buckets = 0, []
        for bound, n in zip((*LATENCY_BUCKETS_MS, float("inf")), now["latency_buckets"]):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound / 1e3), cumulative))
        hist = core.HistogramMetricFamily(
            "defectdet_latency_seconds", "detector + decision time per frame", labels=["model"]
        )
        hist.add_metric([model], buckets, now["latency_sum_ms"] / 1e3)
        yield hist

    def _safety(self, state: Mapping[str, Any]):
        core, model = self.core, self.model_id
        missed = core.CounterMetricFamily(
            "defectdet_missed_rejects", "NG parts whose reject the PLC never got", labels=["model", "reason"]
        )
        for reason in REASONS:
            missed.add_metric([model, reason], state["missed_by_reason"][reason])
        yield missed
        for name, help_, key in (
            ("alarm", "1 after a missed reject (latched for the run)", "alarm"),
            ("ready", "1 while frames are inspected within capture.stall_s", "ready"),
        ):
            gauge = core.GaugeMetricFamily(f"defectdet_{name}", help_, labels=["model"])
            gauge.add_metric([model], float(bool(state[key])))
            yield gauge
        plc = core.GaugeMetricFamily(
            "defectdet_plc_up", "1 while the output is connected to the PLC", labels=["model", "link"]
        )
        for link, up in sorted(state["plc_links"].items()):
            plc.add_metric([model, link], float(up))
        yield plc


class MetricsEndpoint(BaseSink):
    """``GET /metrics`` in Prometheus' text format on ``host:port`` (served from its own thread)."""

    name = "metrics"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 9108,
        model_id: str = "",
        token: Optional[str] = None,
        status: Optional[Callable[[], Mapping[str, Any]]] = None,
    ):
        try:
            from prometheus_client import CollectorRegistry, generate_latest
        except ImportError:
            raise SignalError("metrics need prometheus_client: pip install 'defectdet[station]'") from None
        self.counters, self.status = LineCounters(), status  # status: the loop's summary (health)
        self.safety = LineSafety()  # the loop hands its own
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            Collector(
                self.counters, model_id, lambda: self.status() if self.status else {}, lambda: self.safety
            )
        )
        self._generate = generate_latest
        self.scrapes = 0
        self.server = HttpServer("metrics", host, port, {"/metrics": self._metrics}, token)

    async def _metrics(self, request: Any) -> Any:
        self.scrapes += 1
        body = self._generate(self.registry)
        return self.server.web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    def open(self) -> None:
        self.server.start()

    def emit(self, result: Any) -> None:
        self.counters.add(result)

    def close(self) -> None:
        self.server.stop()

    def stats(self) -> dict[str, Any]:
        return {"scrapes": self.scrapes, "url": self.server.url + "/metrics"}
