"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero;
:func:`exit_statuses` documents those statuses in each command's ``--help``."""

from __future__ import annotations


class DefectdetError(Exception):
    """Base class: the message says what was wrong, where (file[:line]) and what was expected."""


class ConfigError(DefectdetError):
    """A configuration file or key=value override is malformed or names an unknown key."""


class BadValue(ConfigError, ValueError):
    """A setting outside its range (``iou=1.5``); also a ValueError for callers of the library API."""


class DataError(DefectdetError):
    """A dataset (yaml, label file, image) is missing or malformed."""


class TrainingError(DefectdetError):
    """Training cannot go on (non-finite loss, bad settings)."""


def exit_statuses(*rows: tuple[int, str], before: str = "") -> dict:
    """``ArgumentParser`` keywords for a command's ``--help`` epilog listing its exit statuses
    (``before``: a paragraph above them); status 2, which ``defectdet``'s dispatcher
    (:func:`defectdet.cli.main`) gives every
    :class:`~defectdet.errors.DefectdetError`, is appended unless a row states it."""
    import argparse

    lines = [before, ""] if before else []
    if not any(code == 2 for code, _ in rows):
        rows = (*rows, (2, "a bad option, file or value (one line on stderr)"))
    lines += ["exit status:"] + [f"  {code}  {text}" for code, text in rows]
    return {"epilog": "\n".join(lines), "formatter_class": argparse.RawDescriptionHelpFormatter}
