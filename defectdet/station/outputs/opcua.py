"""An OPC UA server on the station (asyncua): counters, the last result, the model and health, for
the PLC or SCADA to read (or subscribe to). A server on the station needs nothing configured in
the PLC beyond reading a node; a client writing into the PLC's own server would need its variables
created there first, and one per PLC brand.

Nodes, under ``Objects/Station`` in namespace ``urn:defectdet:station`` (all read-only, refreshed
every ``update_s`` from counters ``emit`` keeps; the loop never waits for a client): see
:data:`NODES`. Node ids are strings that never change between versions: the object is
``ns=<idx>;s=Station``, each variable ``ns=<idx>;s=Station.<name>`` (``ns=2;s=Station.Frames``),
``<idx>`` being the namespace index of ``urn:defectdet:station``. ``Ready`` is true only while
frames are inspected within ``capture.stall_s`` (and inspection is not halted); ``Heartbeat`` goes
up at a refresh only when frames were inspected since the last one, so it stops when inspection
stops; ``MissedRejects`` and ``Alarm`` tell of NG parts whose reject the PLC never got.
Security: ``security_policy`` (``none`` or e.g. ``Basic256Sha256_SignAndEncrypt``,
with ``certificate`` and ``private_key`` files). Anonymous access only on loopback: an endpoint on
any other address needs a signing policy and a certificate, and then accepts certificate
(X509) user tokens only. asyncua is imported when the server is built.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from ...errors import ConfigError
from ..safety import LineSafety
from ..sink import BaseSink
from .live import LOOPBACK, AsyncService, LineCounters, health
from .signals import SignalError

LOG = logging.getLogger("defectdet.inspect")
NAMESPACE = "urn:defectdet:station"
POLICIES = (
    "none",
    "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt",
    "Aes128Sha256RsaOaep_Sign",
    "Aes128Sha256RsaOaep_SignAndEncrypt",
    "Aes256Sha256RsaPss_Sign",
    "Aes256Sha256RsaPss_SignAndEncrypt",
)


def _ts(last: Mapping[str, Any]) -> datetime:
    return datetime.fromtimestamp(last.get("ts") or 0.0, timezone.utc)


# (browse name, OPC UA type, value from the state dict: LineCounters.read() | health() | extras)
NODES: tuple[tuple[str, str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("Frames", "UInt64", lambda s: s["frames"]),
    ("OK", "UInt64", lambda s: s["ok"]),
    ("NG", "UInt64", lambda s: s["ng"]),
    ("NGParts", "UInt64", lambda s: s["parts_ng"]),
    ("Yield", "Double", lambda s: float(s["yield"] or 0.0)),
    ("LastResult", "String", lambda s: s["last"].get("result", "")),
    ("LastClass", "String", lambda s: s["last"].get("class", "")),
    ("LastConfidence", "Double", lambda s: float(s["last"].get("confidence", 0.0))),
    ("LastFrame", "UInt64", lambda s: int(s["last"].get("frame", 0))),
    ("LastTime", "DateTime", lambda s: _ts(s["last"])),
    ("LastNGClass", "String", lambda s: s["last_ng"].get("class", "")),
    ("LastNGConfidence", "Double", lambda s: float(s["last_ng"].get("confidence", 0.0))),
    ("LastNGFrame", "UInt64", lambda s: int(s["last_ng"].get("frame", 0))),
    ("LastNGTime", "DateTime", lambda s: _ts(s["last_ng"])),
    ("ModelId", "String", lambda s: s["model"]),
    ("Source", "String", lambda s: s["source"]),
    ("Fps", "Double", lambda s: float(s["fps"])),
    ("LatencyP50Ms", "Double", lambda s: float(s["latency_p50_ms"] or 0.0)),
    ("LatencyP99Ms", "Double", lambda s: float(s["latency_p99_ms"] or 0.0)),
    ("DroppedFrames", "UInt64", lambda s: s["dropped"]),
    ("Reconnects", "UInt64", lambda s: s["reconnects"]),
    ("SinkErrors", "UInt64", lambda s: s["sink_errors"]),
    ("Heartbeat", "UInt32", lambda s: s["heartbeat"] & 0xFFFFFFFF),
    ("Healthy", "Boolean", lambda s: s["healthy"]),
    ("Ready", "Boolean", lambda s: bool(s["ready"])),
    ("MissedRejects", "UInt64", lambda s: int(s["missed_rejects"])),
    ("Alarm", "Boolean", lambda s: bool(s["alarm"])),
    ("InspectionHalted", "Boolean", lambda s: bool(s["halted"])),
    (
        "PlcLink",
        "String",
        lambda s: ",".join(f"{k}:{'up' if v else 'down'}" for k, v in sorted(s["plc_links"].items())),
    ),
    ("RunId", "String", lambda s: s["run_id"]),
)


def node_id(idx: int, name: str = "") -> str:
    """The string node id of the Station object (``name`` empty) or of one of its variables."""
    return f"ns={idx};s=Station" + (f".{name}" if name else "")


def check_security(
    key: str, endpoint: str, policy: str, certificate: Optional[str], private_key: Optional[str]
) -> str:
    """The endpoint's host; one-line ConfigErrors for a bad policy, or anonymous access beyond loopback."""
    parts = urlsplit(str(endpoint))
    if parts.scheme != "opc.tcp" or not parts.hostname or parts.port is None:
        raise ConfigError(
            f"{key}.endpoint={endpoint!r}: expected opc.tcp://host:port/path, e.g. opc.tcp://127.0.0.1:4840/defectdet"
        )
    if policy not in POLICIES:
        raise ConfigError(f"{key}.security_policy={policy!r}: expected one of {', '.join(POLICIES)}")
    if policy != "none" and not (certificate and private_key):
        raise ConfigError(
            f"{key}.security_policy={policy}: set {key}.certificate and {key}.private_key (PEM or DER files)"
        )
    if parts.hostname not in LOOPBACK and policy == "none":
        raise ConfigError(
            f"{key}.endpoint on {parts.hostname!r} (beyond 127.0.0.1) refuses anonymous access: set "
            f"{key}.security_policy (e.g. Basic256Sha256_SignAndEncrypt) with a certificate and private_key"
        )
    return parts.hostname


class OpcUaServer(BaseSink):
    """The station's OPC UA server (see the module docstring)."""

    name = "opcua"

    def __init__(
        self,
        endpoint: str = "opc.tcp://127.0.0.1:4840/defectdet",
        *,
        security_policy: str = "none",
        certificate: Optional[str] = None,
        private_key: Optional[str] = None,
        update_s: float = 0.5,
        info: Optional[Mapping[str, Any]] = None,
        status: Optional[Callable[[], Mapping[str, Any]]] = None,
    ):
        self.host = check_security("opcua", endpoint, security_policy, certificate, private_key)
        try:
            import asyncua
        except ImportError:
            raise SignalError("the OPC UA server needs asyncua: pip install 'defectdet[station]'") from None
        if logging.getLogger("asyncua").level == logging.NOTSET:
            logging.getLogger("asyncua").setLevel(
                logging.CRITICAL
            )  # its own notes and tracebacks; ours are one line
        self.ua, self.endpoint, self.policy = asyncua, str(endpoint), security_policy
        self.certificate, self.private_key, self.update_s = certificate, private_key, float(update_s)
        self.info, self.status = dict(info or {}), status
        self.counters = LineCounters()
        self.safety = LineSafety()  # the loop hands its own
        self.run_id = ""
        self.service = AsyncService("opcua")
        self.updates = self.failed = self.heartbeat = self._beat_frames = 0
        self._server: Any = None
        self._nodes: dict[str, Any] = {}
        self._last_emit = 0.0
        self._running = False

    async def _setup(self) -> None:
        ua = self.ua.ua
        server = self.ua.Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("defectdet station")
        server.set_security_policy(
            [getattr(ua.SecurityPolicyType, "NoSecurity" if self.policy == "none" else self.policy)]
        )
        if self.policy != "none":
            await server.load_certificate(self.certificate)
            await server.load_private_key(self.private_key)
            if self.host not in LOOPBACK:  # no anonymous clients beyond loopback
                if hasattr(server, "set_identity_tokens"):
                    server.set_identity_tokens([ua.X509IdentityToken])
                else:
                    server.set_security_IDs(["Basic256Sha256"])
        idx = await server.register_namespace(NAMESPACE)
        station = await server.nodes.objects.add_object(node_id(idx), ua.QualifiedName("Station", idx))
        state = self._state()
        for name, kind, value in NODES:  # browse names in our namespace, as before the string ids
            self._nodes[name] = await station.add_variable(
                node_id(idx, name),
                ua.QualifiedName(name, idx),
                ua.Variant(value(state), getattr(ua.VariantType, kind)),
            )
        try:
            await server.start()
        except OSError as e:
            raise OSError(
                e.errno, f"cannot listen on {self.endpoint} ({e.strerror or e}): is the port in use?"
            ) from None
        self._server, self._running = server, True
        self.service.spawn(self._refresh())

    def _state(self) -> dict[str, Any]:
        s = {
            **self.counters.read(),
            **health(self.status),
            **self.safety.state(),
        }  # no dict | dict: Python 3.8
        healthy = self._last_emit > 0 and time.monotonic() - self._last_emit < max(5.0, 4 * self.update_s)
        return {
            **s,
            "model": str(self.info.get("model", "")),
            "source": str(self.info.get("source", "")),
            "heartbeat": self.heartbeat,
            "healthy": healthy,
            "run_id": self.run_id,
        }

    async def _refresh(self) -> None:
        import asyncio

        ua = self.ua.ua
        while self._running:
            frames = self.counters.frames
            if frames != self._beat_frames:  # beats only while frames are inspected
                self.heartbeat, self._beat_frames = self.heartbeat + 1, frames
            state = self._state()
            try:
                for name, kind, value in NODES:
                    await self._nodes[name].write_value(
                        ua.Variant(value(state), getattr(ua.VariantType, kind))
                    )
                self.updates += 1
            except (
                Exception
            ) as e:  # a value out of range, a server stopping: logged, and the next round tries again
                self.failed += 1
                if self.failed == 1:
                    LOG.error(
                        "opcua: updating the nodes failed (%s: %s); retrying every %.1f s",
                        e.__class__.__name__,
                        e,
                        self.update_s,
                    )
            await asyncio.sleep(self.update_s)

    def open(self) -> None:
        self.service.start(self._setup)
        LOG.info("opcua: serving %s (security %s)", self.endpoint, self.policy)

    def emit(self, result: Any) -> None:
        self.counters.add(result)
        self.run_id = result.run_id
        self._last_emit = time.monotonic()

    def close(self) -> None:
        self._running = False
        server = self._server
        self.service.stop(server.stop if server is not None else None)
        self._server = None

    def stats(self) -> dict[str, Any]:
        return {"updates": self.updates, "failed": self.failed, "endpoint": self.endpoint}
