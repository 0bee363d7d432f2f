"""Which GStreamer elements this machine has, asked of ``gst-inspect-1.0`` before a pipeline relies on them.

Containers often lack ``/etc/nv_tegra_release`` yet have JetPack's plugins, or the reverse (an L4T
image run without ``--runtime nvidia`` has no ``nvvidconv``), so the CSI and RTSP pipelines are
chosen from the elements that exist (:func:`has_element`), never from the release file. A missing
element is a one-line :class:`~.sources.SourceUnsupported` naming it and what to install.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Optional

INSPECT = "gst-inspect-1.0"

# element -> where it comes from (the hint of the error when it is missing)
PROVIDERS = {
    "nvarguscamerasrc": "JetPack's GStreamer plugins (nvidia-l4t-gstreamer); in a container run with "
    "--runtime nvidia and -v /tmp/argus_socket:/tmp/argus_socket",
    "nvvidconv": "JetPack's GStreamer plugins (nvidia-l4t-gstreamer); in a container run with "
    "--runtime nvidia",
    "nvv4l2decoder": "JetPack's GStreamer plugins (nvidia-l4t-gstreamer); in a container run with "
    "--runtime nvidia",
    "avdec_h264": "apt install gstreamer1.0-libav",
    "avdec_h265": "apt install gstreamer1.0-libav",
    "rtph264depay": "apt install gstreamer1.0-plugins-good",
    "rtph265depay": "apt install gstreamer1.0-plugins-good",
    "rtspsrc": "apt install gstreamer1.0-plugins-good",
    "h264parse": "apt install gstreamer1.0-plugins-bad",
    "h265parse": "apt install gstreamer1.0-plugins-bad",
    "videoconvert": "apt install gstreamer1.0-plugins-base",
    "appsink": "apt install gstreamer1.0-plugins-base",
}


@functools.lru_cache(maxsize=None)
def has_element(name: str) -> Optional[bool]:
    """Whether GStreamer has element ``name`` (``gst-inspect-1.0 --exists``); None when it cannot be asked."""
    exe = shutil.which(INSPECT)
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "--exists", name], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None


def missing(names) -> list[str]:
    """The elements of ``names`` GStreamer is known to lack (none when it cannot be asked)."""
    return [n for n in names if has_element(n) is False]


def explain(uri: str, names: list[str]) -> str:
    """``uri: GStreamer has no element X (gst-inspect-1.0 --exists X): install ...`` for missing ``names``."""
    hints = sorted({PROVIDERS.get(n, "a GStreamer plugin package") for n in names})
    return (
        f"{uri}: GStreamer has no element {', '.join(names)} ({INSPECT} --exists {names[0]} fails): "
        f"{'; '.join(hints)}"
    )
