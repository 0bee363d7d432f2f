"""The inspection station, built on the torch-free detector in :mod:`defectdet.runtime`.

    sources.py      camera / stream / file / folder / synthetic readers, parsed from a URI
    capture.py      FrameSource: the capture thread (latest frame for live sources, reconnects)
    decisions.py    per-class thresholds, ROI, k-of-n debounce -> OK/NG
    sink.py         the Sink protocol (open/emit/close/stats) and the Guard that runs each sink
    registry.py     SINKS: config section -> sink, the one place outputs are registered
    result.py       FrameResult: what a sink sees of one frame (its event record, its overlay)
    sinks.py        the JSONL event log, video, window
    snapshots.py    NG snapshots under a disk quota
    safety.py       LineSafety: missed rejects, the alarm, ready, PLC links; run ids
    loop.py         InspectionLoop: capture -> infer -> decide -> sinks -> status, summary.json
    pipeline.py     PipelinedLoop: the same stages on their own threads (``pipeline: on``)
    inspect_cli.py  ``defectdet inspect``: config -> the objects above
    report.py       ``defectdet report``: the shift report in parts (report_text.py, report_html.py)
    outputs/        the line-facing outputs: GPIO/MQTT/webhook/stdout signals, PLC (Modbus TCP),
                    OPC UA, the operator page, Prometheus metrics

**Must:** like the runtime, nothing here imports torch, ultralytics or ``defectdet.train/losses/export``
(``tests/test_runtime_notorch.py`` checks it in a fresh interpreter).
"""
