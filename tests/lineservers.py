"""Loopback servers and helpers for the line-facing outputs' tests: a pymodbus PLC that records
every coil write, a free port, and a port held busy."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BusyPort:
    """A listening socket on a free loopback port: whatever else binds it gets 'address in use'."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class Plc:
    """pymodbus' own TCP server on 127.0.0.1: 16 coils, 32 holding registers; coil writes recorded."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.coil_writes: list[tuple[float, int, bool]] = []  # (time, address, value), in arrival order
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = None

    def _trace(self, sending, pdu):
        if not sending and pdu.function_code == 5:  # write single coil
            self.coil_writes.append((time.monotonic(), pdu.address, bool(pdu.bits[0])))
        return pdu

    async def _start(self):
        from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
        from pymodbus.server import ModbusTcpServer

        device = ModbusDeviceContext(
            co=ModbusSequentialDataBlock(1, [False] * 16), hr=ModbusSequentialDataBlock(1, [0] * 32)
        )
        self.server = ModbusTcpServer(
            ModbusServerContext(devices=device), address=("127.0.0.1", self.port), trace_pdu=self._trace
        )
        await self.server.serve_forever(background=True)

    def start(self) -> Plc:
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self):
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
            self.server = None

    def close(self):
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def rising_edges(self, coil: int) -> int:
        """Off -> on transitions of a coil, as the PLC saw them."""
        state, edges = False, 0
        for _, address, value in self.coil_writes:
            if address == coil:
                edges += value and not state
                state = value
        return edges

    def read(self, address: int, count: int) -> list[int]:
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2)
        assert client.connect()
        try:
            return list(client.read_holding_registers(address, count=count, device_id=1).registers)
        finally:
            client.close()

    def coil(self, address: int) -> bool:
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2)
        assert client.connect()
        try:
            return bool(client.read_coils(address, count=1, device_id=1).bits[0])
        finally:
            client.close()


class LogLines:
    """Records defectdet.inspect's log lines (also when the CLI turned its propagation off)."""

    def __init__(self, level=logging.INFO):
        self.lines: list[str] = []
        self.handler = logging.Handler(level)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger = logging.getLogger("defectdet.inspect")

    def __enter__(self) -> LogLines:
        self.old_level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(min(self.old_level or logging.INFO, self.handler.level))
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


def get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
    """GET ``url``: (status, body); HTTP errors are returned, not raised."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


logging.getLogger("pymodbus").setLevel(
    logging.ERROR
)  # its deprecation notes about the test server's datastore


class Inspect:
    """``defectdet inspect`` in a subprocess (this checkout on PYTHONPATH); stopped with SIGTERM."""

    def __init__(self, args: list[str], cwd, env: dict | None = None):
        import os
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        self.stderr_path = Path(cwd) / "stderr.txt"
        self.err = open(self.stderr_path, "wb")
        env = {**os.environ, "PYTHONPATH": str(root), "ORT_DISABLE_TELEMETRY": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "defectdet.cli", "inspect", *args],
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=env,
            cwd=cwd,
        )

    def stderr(self) -> str:
        if not self.err.closed:
            self.err.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, url: str, timeout: float = 60.0) -> None:
        """Until ``url`` answers 200 (the run is up), or fail with the run's stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr()
            try:
                if get(url, timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout} s:\n{self.stderr()}")

    def stop(self, timeout: float = 20.0, terminate: bool = True) -> dict:
        """SIGTERM (unless ``terminate`` is False: wait for the run to end), then the summary it printed."""
        import json
        import signal

        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.err.close()
        assert self.proc.returncode == 0, self.stderr()
        return json.loads(out)
