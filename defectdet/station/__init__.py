"""The inspection station: sources, latest-frame capture, decisions, sinks, snapshots, reject/alarm
signals, the loop and ``defectdet inspect`` — built on the torch-free detector in :mod:`defectdet.runtime`.

**Must:** like the runtime, nothing here imports torch, ultralytics or ``defectdet.train/losses/export``
(``tests/test_runtime_notorch.py`` checks it in a fresh interpreter).
"""
