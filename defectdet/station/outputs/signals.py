"""Reject/alarm outputs: a Jetson GPIO pin pulse, an MQTT message, an HTTP webhook, a stdout line.

Each is a :class:`~defectdet.station.sink.Sink` that acts only when ``result.trigger`` is
set (the loop sets it on the first NG frame of a part, or on every NG frame with ``signals.trigger: frame``).
None of them blocks the loop: the GPIO pin is released by a timer, paho-mqtt publishes from its
own network thread, webhooks are posted by a worker thread from a bounded queue.

A reject that an output (the PLC) could not deliver is an alarm: stdout prints ``ALARM {record}``,
MQTT publishes the record to ``<topic>/alarm``, the webhook posts it (``missed_reject``; the GPIO
pin is a reject gate, which a late pulse would fire on the wrong part, so it stays still).

Jetson.GPIO and paho-mqtt are imported only when their output is constructed; a missing package
gives a one-line :class:`SignalError` saying what to install.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from typing import Any, Optional
from urllib.parse import urlsplit

from ...errors import DefectdetError
from ..sink import BaseSink

LOG = logging.getLogger("defectdet.inspect")


class SignalError(DefectdetError):
    """A reject/alarm output cannot be set up (missing package, bad pin or URL)."""


def payload(result: Any) -> bytes:
    """The JSON message an alarm carries: the frame's event record."""
    return json.dumps(result.event(), separators=(",", ":"), default=str).encode()


class StdoutSignal(BaseSink):
    """One JSON line per trigger on stdout (for a PLC bridge reading a pipe, or a demo)."""

    name = "stdout"

    def __init__(self) -> None:
        self.sent = 0

    def emit(self, result: Any) -> None:
        if result.trigger:
            print("NG " + payload(result).decode(), flush=True)
            self.sent += 1

    def missed_reject(self, record: dict) -> None:
        print("ALARM " + json.dumps(record, separators=(",", ":")), flush=True)

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent}


class GpioSignal(BaseSink):
    """Pulse a Jetson GPIO pin (a reject gate, a stack light) for ``pulse_ms`` on each trigger.

    A trigger during a pulse extends it. ``gpio`` replaces the ``Jetson.GPIO`` module (tests);
    pin numbering ``mode`` is BOARD (header pin numbers), BCM, CVM or TEGRA_SOC.
    """

    name = "gpio"

    def __init__(
        self,
        pin: int,
        *,
        pulse_ms: float = 100.0,
        mode: str = "BOARD",
        active_high: bool = True,
        gpio: Any = None,
    ):
        if gpio is None:
            try:
                gpio = importlib.import_module("Jetson.GPIO")
            except ImportError as e:
                raise SignalError(
                    f"gpio output needs Jetson.GPIO (JetPack ships it; else pip install Jetson.GPIO): {e}"
                ) from None
            except RuntimeError as e:  # Jetson.GPIO raises RuntimeError off a Jetson
                raise SignalError(f"gpio output: Jetson.GPIO cannot run here ({e})") from None
        if not hasattr(gpio, str(mode)):
            raise SignalError(f"gpio mode={mode!r}; expected BOARD, BCM, CVM or TEGRA_SOC")
        self.gpio, self.pin, self.pulse_s = gpio, int(pin), float(pulse_ms) / 1e3
        self.active, self.idle = (gpio.HIGH, gpio.LOW) if active_high else (gpio.LOW, gpio.HIGH)
        gpio.setwarnings(False)
        gpio.setmode(getattr(gpio, str(mode)))
        try:
            gpio.setup(self.pin, gpio.OUT, initial=self.idle)
        except (ValueError, RuntimeError) as e:
            raise SignalError(f"gpio pin {self.pin} ({mode}): cannot be an output ({e})") from None
        self.pulses = 0
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    def pulse(self) -> None:
        """Drive the pin active now and idle again after ``pulse_ms`` (restarting a running pulse)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.gpio.output(self.pin, self.active)
            self._timer = threading.Timer(self.pulse_s, self._end)
            self._timer.daemon = True
            self._timer.start()
            self.pulses += 1

    def _end(self) -> None:
        with self._lock:
            self.gpio.output(self.pin, self.idle)
            self._timer = None

    def emit(self, result: Any) -> None:
        if result.trigger:
            self.pulse()

    def stats(self) -> dict[str, Any]:
        return {"pulses": self.pulses}

    def close(self) -> None:
        """Pin back to idle at once, then released."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.gpio.output(self.pin, self.idle)
        self.gpio.cleanup(self.pin)


class MqttSignal(BaseSink):
    """Publish each trigger to an MQTT broker (paho-mqtt; reconnects by itself in its network thread).

    Messages published while the broker is away are queued (at most ``max_queued``) and sent on
    reconnection for qos >= 1. The password comes from the environment variable ``password_env``.
    """

    name = "mqtt"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        topic: str = "defectdet/ng",
        qos: int = 1,
        client_id: Optional[str] = None,
        username: Optional[str] = None,
        password_env: Optional[str] = None,
        keepalive: int = 30,
        tls: bool = False,
        retain: bool = False,
        max_queued: int = 1000,
    ):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise SignalError(
                "mqtt output needs paho-mqtt: pip install 'defectdet[edge]' (or paho-mqtt)"
            ) from None
        if qos not in (0, 1, 2):
            raise SignalError(f"mqtt qos={qos!r}; expected 0, 1 or 2")
        self.mqtt, self.topic, self.qos, self.retain = mqtt, str(topic), int(qos), bool(retain)
        kwargs = {"client_id": client_id or f"defectdet-{os.getpid()}"}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        else:  # paho-mqtt 1.x
            self.client = mqtt.Client(**kwargs)
        if username:
            self.client.username_pw_set(username, os.environ.get(password_env) if password_env else None)
        if tls:
            self.client.tls_set()
        self.client.max_queued_messages_set(int(max_queued))
        self.client.reconnect_delay_set(1, 30)
        self.client.on_publish = self._on_publish
        self.client.connect_async(host, int(port), int(keepalive))
        self.client.loop_start()
        self.sent = self.acked = 0
        self._lock = threading.Lock()

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        """paho's network thread: a message left (qos 0) or was acknowledged by the broker (qos 1, 2)."""
        with self._lock:
            self.acked += 1

    def emit(self, result: Any) -> None:
        if not result.trigger:
            return
        info = self.client.publish(self.topic, payload(result), qos=self.qos, retain=self.retain)
        if info.rc not in (
            self.mqtt.MQTT_ERR_SUCCESS,
            self.mqtt.MQTT_ERR_NO_CONN,
        ):  # NO_CONN: queued until connected
            raise OSError(f"mqtt publish to {self.topic!r} failed: {self.mqtt.error_string(info.rc)}")
        with self._lock:
            self.sent += 1

    def missed_reject(self, record: dict) -> None:
        body = json.dumps(record, separators=(",", ":")).encode()
        info = self.client.publish(f"{self.topic}/alarm", body, qos=self.qos, retain=self.retain)
        if info.rc not in (self.mqtt.MQTT_ERR_SUCCESS, self.mqtt.MQTT_ERR_NO_CONN):
            raise OSError(f"mqtt alarm to {self.topic}/alarm failed: {self.mqtt.error_string(info.rc)}")
        with self._lock:
            self.sent += 1

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent}

    def close(self, timeout: float = 1.0) -> None:
        """Wait up to ``timeout`` for unacknowledged messages, then disconnect."""
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.acked < self.sent:
            LOG.warning("mqtt: %d message(s) not acknowledged by the broker at exit", self.sent - self.acked)
        self.client.disconnect()
        self.client.loop_stop()


class WebhookSignal(BaseSink):
    """POST each trigger's JSON to ``url`` from a worker thread (urllib; bounded queue, never blocks the loop)."""

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
