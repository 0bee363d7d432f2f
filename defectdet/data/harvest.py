"""``defectdet data harvest``: reviewed station frames -> a YOLO data set (or new training images for one).

    defectdet data harvest --from runs/inspect/A runs/inspect/B --out data/line [--merge data.yaml]

Reads each run's review queue (``<run>/review/``: ``items/*.json`` + frames, ``review.jsonl`` with
the operator's verdicts, the latest per item) and writes, under ``--out``:

* ``images/{train,val}/<hash>.png`` and ``labels/{train,val}/<hash>.txt`` — a ``defect`` verdict
  becomes its confirmed and drawn boxes; an ``ok`` verdict an empty label file: a defect-free
  image, the hard negative a false reject teaches; ``skip`` is left out;
* ``data.yaml`` — class names: those of ``--merge``'s data set (or of an earlier harvest into
  ``--out``, or the live model's), then any class the operators named that is new, appended so
  that existing label ids stay valid;
* ``provenance.jsonl`` — one line per image: its hash, the run, item, run id, model, kind, verdict,
  who reviewed it and when.

Images are deduplicated by the SHA-256 of their pixels: against ``provenance.jsonl`` and within a
harvest, so harvesting the same runs again adds nothing. Without ``--merge`` a share of new images
(``--val-fraction``, chosen by hash: stable) goes to val. With ``--merge data.yaml``, ``--out``'s
``data.yaml`` trains on that data set's train split plus every harvested image, and validates on
its val split unchanged (so scores stay comparable) unless ``--merge-val`` adds the hash-chosen
share. The result is checked as ``defectdet data check`` checks it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2

from ..config import atomic_write_bytes, atomic_write_text, dump_yaml, load_yaml
from ..errors import DataError


@dataclass
class Harvest:
    """What a harvest did."""

    out: Path
    names: list[str]
    added: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    boxes: dict[str, int] = field(default_factory=dict)  # class -> boxes added
    hard_negatives: int = 0
    duplicates: int = 0
    skipped: int = 0  # verdict 'skip'
    missing: int = 0  # reviewed, but the frame is gone (disk budget) or unreadable
    reviewed: int = 0

    def summary(self) -> str:
        boxes = ", ".join(f"{k} {v}" for k, v in sorted(self.boxes.items())) or "none"
        return (
            f"harvested {sum(self.added.values())} image(s) (train {self.added['train']}, "
            f"val {self.added['val']}) into {self.out}: boxes {boxes}; "
            f"{self.hard_negatives} hard negative(s); "
            f"of {self.reviewed} reviewed "
            f"item(s) {self.duplicates} already harvested, {self.skipped} skipped, {self.missing} missing"
        )


def review_folders(runs: Sequence[str | Path]) -> list[Path]:
    """The review folders of ``runs``: a run (``<run>/review``), a review folder, or a folder of runs."""
    out: list[Path] = []
    for run in map(Path, runs):
        if (run / "items").is_dir():
            out.append(run)
        elif (run / "review" / "items").is_dir():
            out.append(run / "review")
        elif run.is_dir() and (found := sorted(p.parent for p in run.glob("*/review/items"))):
            out.extend(found)
        else:
            raise DataError(
                f"{run}: no review queue here (expected <run>/review/items from defectdet inspect --review)"
            )
    return out


def reviewed_items(folder: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(item meta, latest verdict) of every reviewed item of a review folder, oldest first."""
    from ..review_log import read_log

    verdicts = read_log(folder / "review.jsonl")
    for item_id in sorted(verdicts):
        path = folder / "items" / f"{item_id}.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {"id": item_id, "image": None}
        yield meta, verdicts[item_id]


def pixel_hash(image: Any) -> str:
    """SHA-256 of an image's shape and pixels (the same frame saved twice hashes alike)."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _names(out: Path, merge: Optional[Path], folders: list[Path]) -> list[str]:
    from .formats import load_data_yaml

    for yaml_path in (merge, out / "data.yaml"):
        if yaml_path is not None and yaml_path.is_file():
            names = load_data_yaml(yaml_path).names
            if names is None:
                raise DataError(f"{yaml_path}: no class names ('names:' list or mapping)")
            return names
    for folder in folders:
        if (folder / "queue.json").is_file():
            return [
                str(n)
                for n in json.loads((folder / "queue.json").read_text(encoding="utf-8")).get("names", [])
            ]
    return []


def _seen(out: Path) -> set[str]:
    path = out / "provenance.jsonl"
    if not path.is_file():
        return set()
    return {
        json.loads(line)["hash"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    }


def _label(boxes: list[dict[str, Any]], names: list[str], w: int, h: int) -> str:
    rows = []
    for b in boxes:
        if b["class"] not in names:
            names.append(b["class"])
        x1, y1, x2, y2 = (float(v) for v in b["xyxy"])
        x1, x2, y1, y2 = max(x1, 0), min(x2, w), max(y1, 0), min(y2, h)
        rows.append(
            f"{names.index(b['class'])} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
            f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
        )
    return "".join(rows)


def harvest(
    runs: Sequence[str | Path],
    out: str | Path,
    merge: Optional[str | Path] = None,
    merge_val: bool = False,
    val_fraction: float = 0.2,
) -> Harvest:
    """Reviewed items of ``runs`` -> images, labels, ``data.yaml`` and ``provenance.jsonl`` under ``out``."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1)")
    out, merge = Path(out), Path(merge) if merge is not None else None
    if merge is not None and not merge.is_file():
        raise DataError(f"--merge {merge}: no such data.yaml")
    folders = review_folders(runs)
    rep = Harvest(out, _names(out, merge, folders))
    seen, lines = _seen(out), []
    has_val = any((out / "images" / "val").glob("*")) if (out / "images" / "val").is_dir() else False
    for folder in folders:
        for meta, verdict in reviewed_items(folder):
            rep.reviewed += 1
            if verdict.get("verdict") not in ("defect", "ok"):
                rep.skipped += 1
                continue
            image = (
                cv2.imread(str(folder / "items" / meta["image"]), cv2.IMREAD_UNCHANGED)
                if meta.get("image")
                else None
            )
            if image is None:
                rep.missing += 1
                continue
            digest = pixel_hash(image)
            if digest in seen:
                rep.duplicates += 1
                continue
            seen.add(digest)
            to_val = (merge is None or merge_val) and (
                int(digest[:8], 16) % 1000 < val_fraction * 1000
                or (merge is None and not has_val and val_fraction > 0)
            )
            split = "val" if to_val else "train"
            has_val = has_val or to_val
            lines.append(_write(out, split, folder, meta, verdict, image, digest, rep))
    _write_yaml(out, merge, merge_val, rep.names)
    if lines:
        with open(out / "provenance.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in lines)
    return rep


def _write(
    out: Path,
    split: str,
    folder: Path,
    meta: dict[str, Any],
    verdict: dict[str, Any],
    image: Any,
    digest: str,
    rep: Harvest,
) -> dict[str, Any]:
    """One image and its label file; the provenance line."""
    h, w = image.shape[:2]
    suffix = Path(meta["image"]).suffix.lower()
    name = digest[:20]
    atomic_write_bytes(
        out / "images" / split / f"{name}{suffix}", (folder / "items" / meta["image"]).read_bytes()
    )
    boxes = (verdict.get("boxes") or []) if verdict["verdict"] == "defect" else []
    atomic_write_text(out / "labels" / split / f"{name}.txt", _label(boxes, rep.names, w, h))
    rep.added[split] += 1
    rep.hard_negatives += not boxes
    for b in boxes:
        rep.boxes[b["class"]] = rep.boxes.get(b["class"], 0) + 1
    return {
        "hash": digest,
        "image": f"images/{split}/{name}{suffix}",
        "split": split,
        "run": str(folder.parent),
        "item": meta.get("id"),
        "run_id": meta.get("run_id"),
        "model": meta.get("model"),
        "kind": meta.get("kind"),
        "frame": meta.get("frame"),
        "captured": meta.get("ts"),
        "verdict": verdict["verdict"],
        "who": verdict.get("who"),
        "reviewed": verdict.get("ts"),
        "boxes": boxes,
    }


def _write_yaml(out: Path, merge: Optional[Path], merge_val: bool, names: list[str]) -> None:
    from .formats import load_data_yaml

    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"path": str(out.resolve()), "train": "images/train", "val": "images/val"}
    if merge is not None:
        spec = load_data_yaml(merge)
        base_val = [str(p) for p in spec.splits["val"]]
        doc["train"] = [str(p) for p in spec.splits["train"]] + [str((out / "images" / "train").resolve())]
        doc["val"] = base_val + ([str((out / "images" / "val").resolve())] if merge_val else [])
        doc["merged_from"] = str(merge.resolve())
    elif (out / "data.yaml").is_file():
        previous = load_yaml(out / "data.yaml", kind="data.yaml")
        doc = {**previous, **{k: v for k, v in doc.items() if k not in previous}}
    doc["names"] = dict(enumerate(names))
    dump_yaml(out / "data.yaml", doc)


def cli(argv: list[str]) -> int:
    """``defectdet data harvest``: harvest, print what was added, then check the result (exit 1 on errors)."""
    from ..settings.data import DATA_HARVEST
    from ..settings.options import parser
    from .validate import check_dataset

    p = parser(
        DATA_HARVEST,
        __doc__.split("\n\n")[0],
        [(0, "harvested, and the result passes defectdet data check"), (1, "the result has errors")],
    )
    a = p.parse_args(argv)
    rep = harvest(a.runs, a.out, a.merge, a.merge_val, a.val_fraction)
    print(rep.summary())
    check = check_dataset(Path(a.out) / "data.yaml")
    for problem in check.errors:
        print(f"error: {problem}")
    print(check.summary())
    return 0 if check.ok else 1
