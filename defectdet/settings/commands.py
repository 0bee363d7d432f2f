"""Every command's schema, in the workflow order of ``defectdet --help``: what ``docs/settings.md`` lists
and what ``tests/test_settings_schema.py`` compares each command's parser with. ``inspect`` and ``train``
(a config file and key=value settings) have their own modules; the rest are command-line options, each
command's argparse parser built from its schema (:mod:`.options`)."""

from __future__ import annotations

from . import Schema
from .data import DATA_CHECK, DATA_CONVERT, DATA_HARVEST, DATA_STATS, SYNTH
from .demo import DEMO
from .export import BUILD_ENGINE, EXPORT, GATE, PACKAGE, QUANTIZE
from .tools import CHECKS, COMPARE, REPORT, REVIEW
from .val import VAL

# command (as typed after `defectdet`) -> the schema of its options
OPTIONS: dict[str, Schema] = {
    s.command: s
    for s in (
        DEMO,
        SYNTH,
        DATA_CHECK,
        DATA_STATS,
        DATA_CONVERT,
        DATA_HARVEST,
        VAL,
        EXPORT,
        QUANTIZE,
        GATE,
        PACKAGE,
        CHECKS,
        BUILD_ENGINE,
        REVIEW,
        COMPARE,
        REPORT,
    )
}
