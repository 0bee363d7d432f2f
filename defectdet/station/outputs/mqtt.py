"""Each reject trigger, and each missed reject (``<topic>/alarm``), published to an MQTT broker.

paho-mqtt is imported when the output is built and publishes from its own network thread, so the
loop never waits on the broker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Optional

from ..sink import BaseSink
from .signals import SignalError, payload

LOG = logging.getLogger("defectdet.inspect")


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
