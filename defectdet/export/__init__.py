"""Export: checkpoint -> ONNX (+ metadata) -> INT8 Q/DQ ONNX -> accuracy gate -> TensorRT engine.

* :mod:`defectdet.export.onnx`      ``defectdet export``: ultralytics' ONNX exporter, onnxslim,
  metadata in the graph and in the sidecar ``model.json`` (their format: :mod:`defectdet.artifact`),
  parity against PyTorch.
* :mod:`defectdet.export.quantize`  ``defectdet quantize``: onnxruntime.quantization static Q/DQ,
  calibrated on defect images, head outputs kept in float; runs the gate.
* :mod:`defectdet.export.calibration`  calibration images (defect-enriched, pre-processed as the
  model records) for quantize's reader and build-engine's implicit-INT8 calibrator.
* :mod:`defectdet.export.gate`      ``defectdet gate``: FP32 vs INT8 on the CPU, refuses a drop.
* :mod:`defectdet.export.tensorrt`  ``defectdet build-engine``: the TensorRT builder (8.6 / 10.x / 11.x).

This package ``__init__`` imports nothing heavy: each command imports its libraries when it runs.
"""

from __future__ import annotations

from ..errors import DefectdetError


class ExportError(DefectdetError):
    """An export / quantization / engine build step failed (the message says which and why)."""


class GateRefused(DefectdetError):
    """The accuracy gate refused an INT8 model (the message lists the violated limits)."""
