"""The model bundle: one zip file that carries a trained model from the workstation to the line.

``defectdet package`` writes it; ``build-engine``, ``inspect`` and ``checks`` read it in place
(docs/bundle.md says why a zip and not a folder). Members::

    manifest.json              what is inside: every other member's sha256 and size, the models,
                               the card, the calibration pairing (its sha256 is the bundle id)
    fp32/model.onnx  .json     the FP32 ONNX and its sidecar (thresholds calibrated for it)
    int8/model.int8.onnx .json the INT8 Q/DQ ONNX and its sidecar, when it passed the gate
    thresholds/fp32.yaml ...   the thresholds each precision was calibrated to
    reports/...                validation and gate reports (JSON + PNGs)
    calib/model.calib.cache    (optional) a TensorRT calibration cache, paired with the sha256 of
                               the model it was computed on
    run/defectdet.yaml         the training run's settings (when the checkpoint came from one)

A bundle is refused, in one line naming the member, when a member's bytes differ from the
manifest's hash, a listed member is missing, a member is not listed, or the calibration cache is
paired with another model than the bundle's. Running it needs files: :meth:`Bundle.extract`
verifies and unpacks the members once into the *device cache* beside the bundle
(``model.bundle.cache/<id>/files``), where ``build-engine`` also keeps the engines it builds for
this device (``.../engines/<key>/``, :func:`engine_key`: GPU or DLA, TensorRT version, precision).

Torch-free and TensorRT-free (stdlib only): the station reads it on Python 3.8.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional

from .sidecar import MetadataError

FORMAT = "defectdet-bundle"
VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".bundle"
CACHE_SUFFIX = ".cache"  # model.bundle -> model.bundle.cache/ (the device cache folder beside it)
CACHE_ENV = "DEFECTDET_BUNDLE_CACHE"  # a folder for device caches, when the bundle's own folder is read-only
ID_CHARS = 16  # bundle id prefix naming its folder in the device cache


class BundleError(MetadataError):
    """A bundle is unreadable, tampered with, or inconsistent; the message names the bundle and the member."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_name(name: str, where: str) -> str:
    """A member name: relative POSIX path without '..' (a zip cannot write outside its folder)."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name.endswith("/"):
        raise BundleError(
            f"{where}: member {name!r} is not a plain relative path; expected e.g. fp32/model.onnx"
        )
    return name


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a manifest (sorted keys, compact): what the bundle id hashes."""
    return (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8")


def write_bundle(
    out: str | os.PathLike,
    files: Mapping[str, str | os.PathLike],
    models: Mapping[str, str],
    deployed: str,
    card: str,
    calibration: Optional[Mapping[str, str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Bundle:
    """Write a bundle atomically and return it opened (verified).

    Args:
        out: the ``.bundle`` file.
        files: member name -> source file on disk.
        models: precision -> member (``{"fp32": "fp32/model.onnx", "int8": ...}``).
        deployed: the precision the line runs unless told otherwise (a key of ``models``).
        card: the member holding the model card (the deployed model's sidecar JSON).
        calibration: ``{"cache": member, "model": member}``: the calibration cache and the model it
            was computed on; the pairing is recorded as that model's sha256.
        extra: further facts for the manifest (gate decision, ...), plain JSON.
    """
    out = Path(out)
    entries = _entries(out, files)
    for what, name in [*((f"models.{k}", v) for k, v in models.items()), ("card", card)]:
        if name not in entries:
            raise BundleError(f"{out}: {what} names {name}, which is not among the members")
    if deployed not in models:
        raise BundleError(f"{out}: deployed={deployed!r}; expected one of {sorted(models)}")
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "files": entries,
        "models": dict(models),
        "deployed": deployed,
        "card": card,
        **dict(extra or {}),
    }
    if calibration:
        cache, model = calibration["cache"], calibration["model"]
        for name in (cache, model):
            if name not in entries:
                raise BundleError(f"{out}: calibration names {name}, which is not among the members")
        manifest["calibration"] = {"cache": cache, "model": model, "model_sha256": entries[model]["sha256"]}
    _write_zip(out, manifest, files)
    return open_bundle(out)


def _entries(out: Path, files: Mapping[str, str | os.PathLike]) -> Dict[str, Dict[str, Any]]:
    """The manifest's ``files``: member -> sha256 and size of its source file."""
    entries: Dict[str, Dict[str, Any]] = {}
    for name, src in sorted(files.items()):
        _check_name(name, str(out))
        if name == MANIFEST:
            raise BundleError(f"{out}: {MANIFEST} is written by the bundle itself, not given as a member")
        src = Path(src)
        if not src.is_file():
            raise BundleError(f"{out}: member {name} comes from {src}, which is not a file")
        entries[name] = {"sha256": _file_sha256(src), "size": src.stat().st_size}
    return entries


def _write_zip(out: Path, manifest: Mapping[str, Any], files: Mapping[str, str | os.PathLike]) -> None:
    """The zip, manifest first, written to a temporary file and renamed over ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, manifest_bytes(manifest))
            for name, src in sorted(files.items()):
                z.write(src, name)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_bundle(path: str | os.PathLike) -> bool:
    """True for a file that is a zip with a manifest.json (whatever its name ends with)."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        return MANIFEST in z.namelist()


class Bundle:
    """An opened, verified bundle: its manifest, its id, and where its device cache is."""

    def __init__(self, path: Path, manifest: Dict[str, Any], manifest_raw: bytes):
        self.path = path
        self.manifest = manifest
        self.id = _sha256(manifest_raw)  # the bundle id: sha256 of manifest.json

    # -- what it holds ----------------------------------------------------------------------------
    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def label(self) -> str:
        """``model.bundle:3f2a9c01b7de``, the form the station's outputs carry as ``model``."""
        return f"{self.path.name}:{self.short_id}"

    def members(self) -> List[str]:
        """Every member listed in the manifest (manifest.json itself excluded), sorted."""
        return sorted(self.manifest["files"])

    @property
    def models(self) -> Dict[str, str]:
        return dict(self.manifest["models"])

    @property
    def deployed(self) -> str:
        return str(self.manifest["deployed"])

    def read(self, name: str) -> bytes:
        """A member's bytes, checked against its hash."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.path}: no member {name}; it holds {', '.join(self.members())}")
        with zipfile.ZipFile(self.path) as z:
            data = z.read(name)
        if _sha256(data) != self.manifest["files"][name]["sha256"]:
            raise BundleError(
                f"{self.path}: {name}: sha256 differs from the manifest (changed after packaging)"
            )
        return data

    def card(self) -> Dict[str, Any]:
        """The model card: the deployed model's sidecar, as a dict (the seam a typed card replaces)."""
        name = self.manifest["card"]
        try:
            doc = json.loads(self.read(name).decode("utf-8"))
        except ValueError as e:
            raise BundleError(
                f"{self.path}: {name}: malformed JSON ({e}); expected the model's sidecar"
            ) from None
        if not isinstance(doc, dict):
            raise BundleError(f"{self.path}: {name}: expected a JSON object (the model's sidecar)")
        return doc

    # -- the device cache -------------------------------------------------------------------------
    def cache_root(self, cache: str | os.PathLike | None = None) -> Path:
        """This bundle's folder in the device cache: ``<cache>/<id16>``; ``cache`` defaults to
        ``$DEFECTDET_BUNDLE_CACHE/<bundle name>.cache`` when that variable is set, else
        ``<bundle>.cache`` beside the bundle."""
        env = os.environ.get(CACHE_ENV)
        if cache:
            base = Path(cache)
        elif env:
            base = Path(env) / (self.path.name + CACHE_SUFFIX)
        else:
            base = self.path.with_name(self.path.name + CACHE_SUFFIX)
        return base / self.id[:ID_CHARS]

    def extract(self, cache: str | os.PathLike | None = None) -> Path:
        """The members as files under ``<cache root>/files``, unpacked once and verified every time
        (a file changed there is unpacked again from the bundle). Returns that folder."""
        dst = self.cache_root(cache) / "files"
        if dst.is_dir() and not self._stale(dst):
            return dst
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".files-", dir=dst.parent))
        except OSError as e:
            raise BundleError(
                f"{self.path}: cannot write its device cache {dst.parent} ({e.strerror or e}); make "
                f"it writable, or point {CACHE_ENV} at a writable folder"
            ) from None
        try:
            self._unpack(tmp)
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(tmp, dst)
        except OSError:  # another process unpacked it meanwhile
            if not dst.is_dir() or self._stale(dst):
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dst

    def _unpack(self, folder: Path) -> None:
        with zipfile.ZipFile(self.path) as z:
            for name, entry in self.manifest["files"].items():
                target = folder.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = z.read(name)
                if _sha256(data) != entry["sha256"]:
                    raise BundleError(
                        f"{self.path}: {name}: sha256 differs from the manifest (changed after packaging)"
                    )
                target.write_bytes(data)

    def _stale(self, folder: Path) -> bool:
        for name, entry in self.manifest["files"].items():
            f = folder.joinpath(*PurePosixPath(name).parts)
            if not f.is_file() or f.stat().st_size != entry["size"] or _file_sha256(f) != entry["sha256"]:
                return True
        return False

    def model_file(self, precision: Optional[str] = None, cache: str | os.PathLike | None = None) -> Path:
        """The extracted ONNX of ``precision`` (default: the deployed one)."""
        precision = precision or self.deployed
        if precision not in self.models:
            raise BundleError(f"{self.path}: no {precision} model; it holds {', '.join(sorted(self.models))}")
        return self.extract(cache).joinpath(*PurePosixPath(self.models[precision]).parts)

    def engines_dir(self, cache: str | os.PathLike | None = None) -> Path:
        return self.cache_root(cache) / "engines"


def _read_manifest(path: Path, z: zipfile.ZipFile) -> tuple:
    try:
        raw = z.read(MANIFEST)
    except KeyError:
        raise BundleError(
            f"{path}: no {MANIFEST}; expected a bundle written by `defectdet package`"
        ) from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise BundleError(f"{path}: {MANIFEST}: malformed JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"{path}: {MANIFEST}: format is not {FORMAT!r}; expected a bundle written by `defectdet package`"
        )
    if manifest.get("version") != VERSION:
        raise BundleError(
            f"{path}: {MANIFEST}: version {manifest.get('version')!r}; this defectdet reads {VERSION}"
        )
    for key, kind in (("files", dict), ("models", dict), ("deployed", str), ("card", str)):
        if not isinstance(manifest.get(key), kind):
            raise BundleError(f"{path}: {MANIFEST}: '{key}' missing or not a {kind.__name__}")
    return manifest, raw


def _verify(path: Path, z: zipfile.ZipFile, manifest: Dict[str, Any]) -> None:
    files = manifest["files"]
    present = [i.filename for i in z.infolist() if not i.is_dir()]
    extra = sorted(set(present) - set(files) - {MANIFEST})
    if extra:
        raise BundleError(f"{path}: {extra[0]}: not listed in the manifest (added after packaging)")
    for name in sorted(files):
        _check_name(name, str(path))
        if name not in present:
            raise BundleError(f"{path}: {name}: listed in the manifest but missing")
        h = hashlib.sha256()
        with z.open(name) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != files[name].get("sha256"):
            raise BundleError(f"{path}: {name}: sha256 differs from the manifest (changed after packaging)")
    for what, name in [
        *((f"models.{k}", v) for k, v in manifest["models"].items()),
        ("card", manifest["card"]),
    ]:
        if name not in files:
            raise BundleError(f"{path}: {MANIFEST}: {what} names {name}, which the bundle does not hold")
    if manifest["deployed"] not in manifest["models"]:
        raise BundleError(f"{path}: {MANIFEST}: deployed {manifest['deployed']!r} is not one of its models")
    _verify_calibration(path, manifest)


def _verify_calibration(path: Path, manifest: Dict[str, Any]) -> None:
    """A calibration cache must belong to a model of this bundle (the stale-cache hazard)."""
    cal = manifest.get("calibration")
    if not cal:
        return
    cache, model = cal.get("cache"), cal.get("model")
    if cache not in manifest["files"]:
        raise BundleError(f"{path}: {MANIFEST}: calibration cache {cache} is not a member")
    if model not in manifest["files"]:
        raise BundleError(f"{path}: {cache}: paired with {model}, which the bundle does not hold")
    if cal.get("model_sha256") != manifest["files"][model]["sha256"]:
        raise BundleError(
            f"{path}: {cache}: paired with another model (sha256 {str(cal.get('model_sha256'))[:12]}), "
            f"not this bundle's {model} ({manifest['files'][model]['sha256'][:12]}); "
            "recalibrate for this model"
        )


def open_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Open ``path`` and (``verify``) check every member against the manifest; a
    :class:`BundleError` names the first problem in one line."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle not found; expected the .bundle file `defectdet package` wrote")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a zip file; expected the .bundle file `defectdet package` wrote")
    try:
        with zipfile.ZipFile(path) as z:
            manifest, raw = _read_manifest(path, z)
            if verify:
                _verify(path, z, manifest)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{path}: unreadable zip ({e.__class__.__name__}: {e})") from None
    return Bundle(path, manifest, raw)


# ----------------------------------------------------------------------------- engine keys
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def engine_key(
    gpu: str, compute_capability: str, tensorrt: str, precision: str, dla_core: Optional[int] = None
) -> str:
    """The device-cache key of an engine: it runs only on this GPU (or DLA core), with this TensorRT
    version, at this precision, e.g. ``orin-sm87_gpu_trt10.3.0_int8``."""
    cc = str(compute_capability).replace(".", "")
    unit = "gpu" if dla_core is None else f"dla{int(dla_core)}"
    return f"{_slug(gpu)}-sm{cc}_{unit}_trt{_slug(tensorrt).replace('-', '.')}_{_slug(precision)}"


def device_prefix(gpu: str, compute_capability: str) -> str:
    """What every engine key of this GPU starts with."""
    return f"{_slug(gpu)}-sm{str(compute_capability).replace('.', '')}_"


def matching_engines(
    bundle: Bundle, gpu: str, compute_capability: str, tensorrt: str, cache: str | os.PathLike | None = None
) -> List[Path]:
    """Engines in the device cache built for this GPU (any unit: GPU or a DLA core) and this
    TensorRT version, newest first; each is ``engines/<key>/<name>.engine``."""
    root = bundle.engines_dir(cache)
    if not root.is_dir():
        return []
    head, trt = device_prefix(gpu, compute_capability), f"_trt{_slug(tensorrt).replace('-', '.')}_"
    found = [
        e
        for d in root.iterdir()
        if d.is_dir() and d.name.startswith(head) and trt in d.name
        for e in d.glob("*.engine")
        if e.is_file()
    ]
    return sorted(found, key=lambda e: e.stat().st_mtime, reverse=True)
