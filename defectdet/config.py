"""Configuration plumbing shared by every command: YAML files and ``key=value`` overrides.

Config -> keyword arguments happens here and only here; library functions take plain keyword
arguments so tests need no files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from .errors import ConfigError


def configs_dir() -> Path:
    """The folder of presets (``train/``, ``models/``) and ``inspect.yaml``: the package data
    ``defectdet/configs/`` of an installed wheel (pyproject.toml maps the repository's top-level
    ``configs/`` there), else ``configs/`` of the source checkout the package is imported from
    (a git clone, ``PYTHONPATH`` or ``pip install -e .``). Every preset lookup goes through here."""
    package = Path(__file__).resolve().parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def config_file(*parts: str) -> Path:
    """A file under :func:`configs_dir`, e.g. ``config_file("inspect.yaml")``,
    ``config_file("train", "focal.yaml")``."""
    return configs_dir().joinpath(*parts)


# configs_dir() at import time, for callers that read it as a constant.
CONFIGS_DIR = configs_dir()


def load_yaml(path: str | os.PathLike, *, kind: str = "config") -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file, line and what was expected."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {kind} file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read {kind} file ({e.__class__.__name__}: {e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML ({problem}); expected a mapping of key: value") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: expected a mapping of key: value at the top level, got {type(data).__name__}"
        )
    return data


def load_json_object(
    path: str | os.PathLike, expected: str, error: type[Exception] = ConfigError, encoding: str = "utf-8"
) -> dict[str, Any]:
    """Read a JSON object; every failure is one ``error`` naming the file (and line) and ``expected``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding=encoding))
    except FileNotFoundError:
        raise error(f"{p}: not found; expected {expected}") from None
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: malformed JSON ({e.msg}); expected {expected}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read ({e.__class__.__name__}: {e}); expected {expected}") from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected {expected}, got a JSON {type(data).__name__}")
    return data


def read_jsonl(path: str | os.PathLike, key: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of an append-only log that carry ``key``, in order (a torn last line, from a
    power cut or a killed writer, is skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and key in rec:
                yield rec


def resolve_config(name: str | os.PathLike, group: str) -> Path:
    """A path as given, or a preset name looked up as ``configs/<group>/<name>.yaml``."""
    p = Path(name)
    if p.is_file():
        return p
    folder = config_file(group)
    preset = folder / f"{p.stem}.yaml"
    if p.suffix in ("", ".yaml", ".yml") and len(p.parts) == 1 and preset.is_file():
        return preset
    available = sorted(q.stem for q in folder.glob("*.yaml")) if folder.is_dir() else []
    hint = f"; presets: {', '.join(available)}" if available else ""
    raise ConfigError(f"{name}: config file not found{hint}")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "cls_loss=focal", "device=0,1"]`` -> typed dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"argument {item!r}: expected key=value (e.g. epochs=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and "," in raw and not raw.strip().startswith(("[", "{")):
            value = raw  # device=0,1 stays a string, as ultralytics expects
        out[key] = value
    return out


def merged(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win; ``None`` layers are skipped."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return out


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread); 0o022 if unknown."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file.
    ``fsync=False`` keeps the rename's all-or-nothing for readers but not across a power cut (for
    frequent, expendable files such as NG snapshots, where a flash-storage sync per file costs
    more than the file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # mode 0600
    try:
        os.fchmod(fd, p.stat().st_mode & 0o7777 if p.exists() else 0o666 & ~_umask())  # as open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dump_yaml(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Atomically write a mapping as YAML (keys in the given order)."""
    return atomic_write_text(path, yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True))
