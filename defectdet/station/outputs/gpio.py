"""A Jetson GPIO pin pulse on each reject trigger (a reject gate, a stack light).

Jetson.GPIO is imported when the output is built; a missing package is a one-line
:class:`~defectdet.station.outputs.signals.SignalError`. A missed reject is not replayed on the pin:
a late pulse would fire on the wrong part, so the alarm goes through the other outputs.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Optional

from ..sink import BaseSink
from .signals import SignalError


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
