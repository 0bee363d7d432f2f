"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero."""


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
