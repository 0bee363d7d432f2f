"""Shared test isolation."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _inspect_logger_restored():
    """`defectdet inspect` run in-process gives its logger a stderr handler and stops its propagation
    (inspect_cli._setup_logging): undo that after each test, or a later test's caplog sees nothing
    (pytest < 8.4, the last on Python 3.8, does not re-enable propagation in caplog.at_level)."""
    log = logging.getLogger("defectdet.inspect")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]
