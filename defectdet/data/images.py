"""Image files: which names are images, their header (size checked against a sane limit before any
decode), the per-image checks of ``defectdet data check``, and the walk of an image folder that
counts each real file once and stops at symlink loops.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError

# The image extensions ultralytics reads (ultralytics.data.utils.IMG_FORMATS), lowercase, no dot.
IMG_FORMATS = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"}
)
# Largest image (width x height) accepted: PIL's DecompressionBombError limit (2 x Image.MAX_IMAGE_PIXELS),
# beyond which PIL, and with it ultralytics' label cache, refuses the file; e.g. 16384 x 10922.
MAX_IMAGE_PIXELS = 178_956_970
# PIL modes that the trainer reads as 3 identical channels / that hold more than 8 bits.
GRAY_MODES = frozenset({"1", "L", "LA"})
DEEP_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


class ImageTooLarge(DataError):
    """An image header declares more pixels than :data:`MAX_IMAGE_PIXELS` (hostile or corrupt)."""

    def __init__(self, path: str | os.PathLike, pixels: int | None, size: tuple[int, int] | None = None):
        what = (
            f"{size[0]}x{size[1]} = {pixels:,} pixels"
            if size
            else f"{pixels:,} pixels"
            if pixels
            else "too many pixels"
        )
        self.message = (
            f"image header declares {what}, expected at most {MAX_IMAGE_PIXELS:,} "
            "(a hostile or corrupt header; not decoded)"
        )
        super().__init__(f"{path}: {self.message}")


class UnreadableImage(DataError):
    """An image file PIL cannot open (empty, truncated before its header, not an image at all)."""

    def __init__(self, path: str | os.PathLike, error: Exception):
        why = (
            str(error).split(chr(39))[0].strip()
        )  # "cannot identify image file '/x.png'" -> without the path
        self.message = (
            f"unreadable image ({why}), expected a {Path(path).suffix.lstrip('.') or 'jpg/png'} image"
        )
        super().__init__(f"{path}: {self.message}")


def is_image_name(name: str | os.PathLike) -> bool:
    """True when the extension is one ultralytics reads (case-insensitive)."""
    return str(name).rpartition(".")[-1].lower() in IMG_FORMATS


def check_headers(paths: Iterable[str | os.PathLike]) -> None:
    """Read every image's header (no decode): :class:`ImageTooLarge`, one line naming the first file
    whose header is hostile, before a model or trainer decodes it. Unreadable files are left to the
    caller's own reader (``defectdet data check`` reports them)."""
    for p in paths:
        try:
            image_size(p)
        except OSError:
            continue


def _bit_depth(im, path: Path) -> int:
    """Bits per channel: PNG IHDR / TIFF BitsPerSample (PIL hides 16-bit RGB as 'RGB'), else the mode."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        return head[24] if len(head) == 26 else 8
    if im.format == "TIFF":
        bps = im.tag_v2.get(258, (8,))
        return max(bps) if isinstance(bps, tuple) else int(bps)
    return DEEP_MODES.get(im.mode, 8)


def _pil_open(path: Path):
    """PIL's own ``Image.open``. Once ultralytics is imported, ``Image.open`` is its wrapper, which on
    an unidentifiable file tries to import the optional pi-heif plugin (ModuleNotFoundError here)
    instead of raising PIL's UnidentifiedImageError; the wrapped original is kept in its module."""
    from PIL import Image

    opener = Image.open
    if getattr(opener, "__module__", "PIL.Image") != "PIL.Image":
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener(path)


def open_image(path: str | os.PathLike):
    """The image opened lazily (header only), its declared size checked before anything decodes it:
    :class:`ImageTooLarge` naming the file when the header declares more than :data:`MAX_IMAGE_PIXELS`
    (PIL's DecompressionBombError never escapes), OSError when the file is unreadable."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = _pil_open(path)
        except Image.DecompressionBombError as e:
            pixels = next((int(n) for n in re.findall(r"\((\d+) pixels\)", str(e))), None)
            raise ImageTooLarge(path, pixels) from None
    if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageTooLarge(path, im.size[0] * im.size[1], im.size)
    return im


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header only; ImageTooLarge (a DataError) or OSError when unusable."""
    with open_image(path) as im:
        return im.size


def checked_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header only, for a reader that must not start on a bad file: every
    failure is one DataError naming it, :class:`ImageTooLarge` (hostile header) or
    :class:`UnreadableImage`."""
    try:
        return image_size(path)  # ImageTooLarge (a DataError) passes through
    except OSError as e:  # PIL's UnidentifiedImageError is one
        raise UnreadableImage(path, e) from None


def check_image(path: Path) -> tuple[list[tuple[str, str, bool]], tuple[int, int] | None]:
    """[(kind, message, is_error)] for one image file (header checked before the full decode), and
    its (w, h) when readable; ``defectdet data check`` reports them."""
    from PIL import UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return [("empty-image", "zero-byte image file, expected image data", True)], None
        im = open_image(path)
    except ImageTooLarge as e:
        return [("image-too-large", e.message, True)], None
    except (UnidentifiedImageError, OSError) as e:
        return [("unreadable-image", UnreadableImage(path, e).message, True)], None
    with im:
        fmt, size, mode = (im.format or "?"), im.size, im.mode
        out: list[tuple[str, str, bool]] = []
        if fmt.lower() not in IMG_FORMATS | {"jpeg2000"}:
            return [
                ("format", f"{fmt} image data, expected one of {', '.join(sorted(IMG_FORMATS))}", True)
            ], None
        try:
            bits, orient = _bit_depth(im, path), im.getexif().get(0x0112, 1)
            im.load()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken data
            why = str(e).split(" (")[0]  # "image file is truncated (12 bytes not processed)" -> stable text
            return [
                ("corrupt-image", f"truncated or corrupt {fmt} image ({why}), expected a complete file", True)
            ], None
    if fmt == "JPEG" and _jpeg_truncated(path):
        out.append(
            (
                "corrupt-image",
                "JPEG does not end with an end-of-image marker (cut short or trailing bytes), "
                "expected a complete file (ultralytics would rewrite it in place)",
                True,
            )
        )
    if min(size) < 10:
        out.append(("small-image", f"image is {size[0]}x{size[1]} px, expected at least 10x10", True))
    if bits > 8:
        out.append(
            (
                "16-bit",
                f"{bits}-bit image, expected 8-bit: the trainer keeps only the high byte (12-bit "
                "data turns almost black); convert to 8-bit with your own scaling",
                True,
            )
        )
    elif mode in GRAY_MODES:
        out.append(("grayscale", f"grayscale image (mode {mode})", False))  # summarized per split
    if orient not in (1, None):
        out.append(
            (
                "exif-rotation",
                f"EXIF orientation {orient}: the image is rotated on load, expected labels "
                "drawn on the rotated view",
                False,
            )
        )
    return out, size


def _jpeg_truncated(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() != b"\xff\xd9"


# ------------------------------------------------------------------------------------ folder walk
@dataclass
class FolderScan:
    """The images below a folder, each real file once (symlinks followed, loops not)."""

    files: list[Path] = field(default_factory=list)  # sorted; the path with the fewest symlinks wins
    loops: list[tuple[Path, Path]] = field(default_factory=list)  # (symlink, the folder above it it leads to)
    repeats: list[tuple[Path, Path]] = field(
        default_factory=list
    )  # (path left out, path kept): same file/folder


def scan_images(folder: str | os.PathLike) -> FolderScan:
    """Walk ``folder`` (recursively, following symlinks) for image files (hidden files skipped). A
    symlinked folder that leads back to a folder above it is a loop: reported, not followed; a file
    or folder reached again through another link is reported once as a repeat and counted once."""
    scan, dirs, files = FolderScan(), {}, {}  # (st_dev, st_ino) -> first path / [(links, path)]

    def walk(d: Path, links: int, above: dict) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: (e.is_symlink(), e.name))  # real entries first
        except OSError:
            return
        for e in entries:
            p, hops = Path(e.path), links + e.is_symlink()
            try:
                st = e.stat()  # follows the link
            except OSError:  # a dangling link
                continue
            key = (st.st_dev, st.st_ino)
            if e.is_dir():
                if key in above:
                    scan.loops.append((p, above[key]))
                elif key in dirs:
                    scan.repeats.append((p, dirs[key]))
                else:
                    dirs[key] = p
                    walk(p, hops, {**above, key: p})
            elif e.is_file() and is_image_name(e.name) and not e.name.startswith("."):
                files.setdefault(key, []).append((hops, p))

    root = Path(folder)
    st = root.stat()
    walk(root, 0, {(st.st_dev, st.st_ino): root})
    for paths in files.values():
        kept = min(paths)[1]
        scan.files.append(kept)
        scan.repeats += [(p, kept) for _, p in sorted(paths) if p != kept]
    scan.files.sort()
    scan.repeats.sort()
    return scan
