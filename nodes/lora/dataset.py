"""LoRA training datasets: the tutorial's layouts, validation, preprocessing, fingerprints.

Three layouts are read (the first one found wins, in this order):

1. ``<path>/train/metadata.csv`` (the tutorial's layout, DiffSynth ``train_kolors_lora.py``)
   or ``<path>/metadata.csv``: columns ``file_name,text``, UTF-8 with or without a BOM.
2. ``<path>/train/metadata.jsonl`` or ``<path>/metadata.jsonl``: one
   ``{"file_name": ..., "text": ...}`` object per line.
3. kohya sd-scripts' folders: subfolders named ``<repeats>_<name>`` (``10_cat/`` = every image
   in it counts 10 times per epoch), each image with a same-name caption file
   (``caption_extension``, default ``.txt``; kohya's ``.caption`` works too).
4. An image folder (``<path>/train`` if it exists, else ``<path>``): every image with a
   same-name ``.txt`` caption next to it (``cat.png`` + ``cat.txt``).

Metadata and caption files are UTF-8 (with or without a BOM); another encoding is refused with
a line naming the file and how to re-save it.

``file_name`` is relative to the metadata file's folder. Problems with single items (a missing
image, an empty caption, an unreadable or too small image) raise :class:`DatasetError` with
``on_bad_item="error"`` and are skipped with a warning with ``on_bad_item="skip"``.

Preprocessing follows the tutorial: resize so the image covers ``height`` x ``width``
(bilinear; for a square target this is "shorter side to the target", exactly as the tutorial;
for a non-square target the tutorial resizes the shorter side to ``max(height, width)``, which
over-zooms, while this module uses the smallest covering scale), centre or random crop,
optional horizontal flip, normalise to [-1, 1].
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from graphgen.context import EngineSettings
from graphgen.files import file_identity
from graphgen.limits import ImageTooLargeError, open_image
from graphgen.paths import inside_roots, not_available

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "DatasetItem",
    "LoraDataset",
    "PreprocessParams",
    "center_crop_box",
    "confine_dataset",
    "dataset_files",
    "dataset_fingerprint",
    "describe",
    "file_digest",
    "load_dataset",
    "load_rgb",
    "kohya_repeats",
    "preprocess_image",
    "random_crop_box",
    "read_text",
]

#: File suffixes treated as images in the image-folder layout.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

OnBadItem = Literal["skip", "error"]


class DatasetError(ValueError):
    """A dataset problem, described in one line naming the file and the fix."""


@dataclass(frozen=True)
class PreprocessParams:
    """How images become training tensors.

    Attributes:
        height: Target height in pixels (a multiple of 8).
        width: Target width in pixels (a multiple of 8).
        center_crop: Centre crop (the tutorial's ``--center_crop``); ``False`` crops at random.
        random_flip: Flip horizontally with probability 1/2 (the tutorial's ``--random_flip``).
    """

    height: int = 1024
    width: int = 1024
    center_crop: bool = True
    random_flip: bool = False

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0 or self.height % 8 or self.width % 8:
            raise DatasetError(
                f"height/width must be positive multiples of 8 (got {self.height}x{self.width}): "
                "pick e.g. 1024x1024"
            )


@dataclass(frozen=True)
class DatasetItem:
    """One training example.

    Attributes:
        image_path: Absolute path of the image file.
        caption: The caption (stripped, non-empty).
        file_name: The name as written in the metadata (relative to ``LoraDataset.root``).
        size: Image size in pixels as ``(width, height)``.
        digest: SHA-256 of the image file's bytes.
        repeats: Times the item counts per epoch (kohya's ``<repeats>_<name>`` folders; else 1).
    """

    image_path: Path
    caption: str
    file_name: str
    size: tuple[int, int]
    digest: str
    repeats: int = 1


@dataclass
class LoraDataset:
    """A validated dataset.

    Attributes:
        root: Folder the ``file_name`` entries are relative to.
        layout: ``"csv"``, ``"jsonl"``, ``"kohya"`` or ``"folder"``.
        items: The usable items, in metadata order.
        warnings: One line per skipped item or other oddity.
    """

    root: Path
    layout: str
    items: list[DatasetItem]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self, params: PreprocessParams) -> str:
        """Hash of the file names, content hashes, sizes, captions and preprocessing params.

        File contents are hashed (not mtimes), so copying or touching the dataset keeps the
        fingerprint while any change to a pixel or a caption changes it.

        Args:
            params: The preprocessing parameters used for training.

        Returns:
            A hex SHA-256 digest.
        """
        h = hashlib.sha256(b"graphgen-lora-dataset-v1\n")
        h.update(json.dumps(asdict(params), sort_keys=True).encode())
        for item in self.items:
            row = [item.file_name, item.digest, list(item.size), item.caption]
            if item.repeats != 1:  # kept out otherwise, so fingerprints of older datasets hold
                row.append(item.repeats)
            h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        return h.hexdigest()


_DIGESTS: dict[tuple[Any, ...], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised per file identity (`graphgen.files.file_identity`).

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    # Keyed by the full identity (inode and ctime too): a same-size replacement with its mtime kept
    # must not get the old file's digest, or training would reuse a LoRA made from the old image.
    key = file_identity(path)
    cached = _DIGESTS.get(key)
    if cached is None:
        cached = hashlib.sha256(path.read_bytes()).hexdigest()
        _DIGESTS[key] = cached
    return cached


def dataset_fingerprint(path: str | Path) -> tuple[Any, ...]:
    """What identifies a dataset folder's current contents, cheaply (no image is decoded or hashed).

    Covers what :func:`load_dataset` reads: which layout wins, the metadata file, and every image
    it lists (for the image-folder layout: every image and caption file). Each file counts by
    `graphgen.files.file_identity`, so an edited caption or a replaced image changes it, even a
    same-size copy with its mtime kept. A node's cache fingerprint; a dataset that cannot be read
    gets an identity naming the problem (the node then runs and reports it).

    Args:
        path: The dataset folder (as given to :func:`load_dataset`).

    Returns:
        A hashable tuple.
    """
    try:
        layout, meta, files = dataset_files(path)
    except (DatasetError, OSError, UnicodeDecodeError, csv.Error) as exc:
        return ("dataset", "unreadable", str(path), type(exc).__name__, str(exc))
    return ("dataset", layout, file_identity(meta), tuple((name, file_identity(file)) for name, file in files))


def confine_dataset(settings: EngineSettings | None, path: str | Path) -> None:
    """In a confined run (`EngineSettings.confine_paths`, the server), the files a dataset lists must lie
    inside the engine's folders too, like the dataset folder itself (`graphgen.paths`).

    Raises:
        graphgen.paths.PathNotAvailableError: a listed image lies outside them (the message does not
            say whether it exists).
    """
    if settings is None or not settings.confine_paths:
        return
    try:
        _, _, files = dataset_files(path)
    except (DatasetError, OSError, UnicodeDecodeError, csv.Error):
        return  # unreadable: load_dataset reports it, naming the file
    for name, file in files:
        if not inside_roots(settings, file):
            raise not_available("dataset image", name)


def dataset_files(path: str | Path) -> tuple[str, Path, list[tuple[str, Path]]]:
    """The files :func:`load_dataset` reads, without reading them: ``(layout, metadata file or image
    folder, [(name as listed, path)])``; for the image-folder layout every image and caption file.

    Raises:
        DatasetError, OSError, UnicodeDecodeError, csv.Error: the folder or its metadata cannot be read.
    """
    layout, meta, root = _find_metadata(Path(path).expanduser().resolve())
    if layout in ("folder", "kohya"):
        # every image and caption file (kohya: in each `<repeats>_<name>/` folder, whose name counts too)
        folders = [root] if layout == "folder" else _kohya_folders(root)
        files = sorted(p for folder in folders for p in folder.iterdir()
                       if p.suffix.lower() in (*IMAGE_SUFFIXES, ".txt", ".caption"))
        return layout, meta, [(str(p.relative_to(root)), p) for p in files]
    rows = {"csv": _read_csv, "jsonl": _read_jsonl}[layout](meta)
    return layout, meta, [(name, root / name) for _, name, _ in rows if name]


def load_rgb(path: Path) -> Image.Image:
    """Opens an image file as RGB.

    Args:
        path: The image file.

    Returns:
        The decoded RGB image.

    Raises:
        DatasetError: If the file is missing or cannot be decoded.
    """
    if not path.is_file():
        raise DatasetError(f"image {path} does not exist: add it or remove its row from the metadata")
    try:
        with open_image(path, f"image {path}") as img:
            img.load()
            return img.convert("RGB")
    except ImageTooLargeError as exc:
        raise DatasetError(f"{exc} (or remove it from the dataset)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(
            f"image {path} cannot be read ({type(exc).__name__}: {exc}): re-save it as PNG/JPEG or remove it"
        ) from exc


def read_text(path: Path) -> str:
    """A metadata or caption file's text: UTF-8, with or without a BOM.

    Raises:
        DatasetError: Naming the file, the first bad byte and how to re-save it as UTF-8.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        guess = "latin-1/cp1252" if all(b < 0x80 or 0xA0 <= b for b in data) else "a legacy code page"
        raise DatasetError(
            f"{path} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}; it looks like {guess}): "
            "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 old.csv > metadata.csv"
        ) from None


def _read_csv(meta: Path) -> list[tuple[int, str, str]]:
    text = read_text(meta)
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "file_name" not in fields or "text" not in fields:
        raise DatasetError(
            f"{meta} must have the columns file_name,text (found {','.join(fields) or 'none'}): "
            "fix its header line"
        )
    rows = []
    for lineno, row in enumerate(reader, start=2):
        clean = {(k or "").strip(): v for k, v in row.items()}
        rows.append((lineno, (clean.get("file_name") or "").strip(), clean.get("text") or ""))
    return rows


def _read_jsonl(meta: Path) -> list[tuple[int, str, str]]:
    rows = []
    for lineno, line in enumerate(read_text(meta).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta}:{lineno} is not valid JSON ({exc.msg}): fix that line") from exc
        if not isinstance(obj, dict) or "file_name" not in obj:
            raise DatasetError(f'{meta}:{lineno} needs an object with "file_name" and "text": fix that line')
        rows.append((lineno, str(obj["file_name"]).strip(), str(obj.get("text") or "")))
    return rows


def _read_folder(folder: Path, caption_extension: str = ".txt", prefix: str = "") -> list[tuple[int, str, str]]:
    rows = []
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for img in images:
        txt = img.with_suffix(caption_extension)
        caption = read_text(txt) if txt.is_file() else ""
        rows.append((0, prefix + img.name, caption))
    return rows


def kohya_repeats(folder: Path) -> int | None:
    """The repeat count of a kohya ``<repeats>_<name>`` folder, or ``None`` for another name."""
    head, sep, _ = folder.name.partition("_")
    return int(head) if sep and head.isdigit() and int(head) > 0 else None


def _kohya_folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and kohya_repeats(p) is not None)


def _read_kohya(root: Path, caption_extension: str) -> list[tuple[int, str, str, int]]:
    rows = []
    for sub in _kohya_folders(root):
        repeats = kohya_repeats(sub) or 1
        rows += [(n, f, c, repeats) for n, f, c in _read_folder(sub, caption_extension, prefix=f"{sub.name}/")]
    return rows


def _find_metadata(path: Path, caption_extension: str = ".txt") -> tuple[str, Path, Path]:
    """Returns ``(layout, metadata file or folder, root)``."""
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {path} does not exist: point dataset_path at the folder holding train/metadata.csv"
        )
    for folder in (path / "train", path):
        for name, layout in (("metadata.csv", "csv"), ("metadata.jsonl", "jsonl")):
            if (folder / name).is_file():
                return layout, folder / name, folder
    for folder in (path / "train", path):
        if folder.is_dir() and _kohya_folders(folder):
            return "kohya", folder, folder
    for folder in (path / "train", path):
        if folder.is_dir() and any(
            p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(caption_extension).is_file()
            for p in folder.iterdir()
        ):
            return "folder", folder, folder
    raise DatasetError(
        f"no metadata in {path}: add train/metadata.csv (columns file_name,text), metadata.jsonl, "
        f"kohya folders like 10_name/ with images and same-name {caption_extension} captions, "
        f"or images with same-name {caption_extension} captions"
    )


def check_dataset(path: str | Path) -> str | None:
    """A cheap validation-time look at a dataset folder: the problem, or None when it looks usable.

    Finds the metadata (or captioned images), reads it and checks that some row has a caption and
    an existing image file. Images are not decoded (`load_dataset` does that when the node runs).
    """
    try:
        layout, meta, root = _find_metadata(Path(path).expanduser())
        if layout == "kohya":
            rows = [(n, f, c) for n, f, c, _ in _read_kohya(root, ".txt")]
        else:
            rows = {"csv": _read_csv, "jsonl": _read_jsonl, "folder": _read_folder}[layout](meta)
    except DatasetError as exc:
        return str(exc)
    except UnicodeDecodeError as exc:
        return f"{meta} is not UTF-8 text (byte {exc.start} is invalid): re-save it as UTF-8"
    except (OSError, csv.Error) as exc:
        return f"cannot read the dataset's metadata: {exc}"
    if not rows:
        return f"{meta} lists no images: add rows (file_name,text)"
    if not any(caption.strip() for _, _, caption in rows):
        return f"no image in {meta} has a caption: fill in the text column (or the .txt files)"
    if not any(name and (root / name).is_file() for _, name, caption in rows if caption.strip()):
        return f"none of the captioned images listed in {meta} exists under {root}: add them or fix file_name"
    return None


def load_dataset(
    path: str | Path,
    *,
    on_bad_item: OnBadItem = "error",
    min_side: int = 64,
    caption_extension: str = ".txt",
) -> LoraDataset:
    """Reads and validates a dataset folder.

    Every image is opened and decoded once, so a broken file fails here, not mid-training.

    Args:
        path: The dataset folder (the tutorial's ``dataset_path``).
        on_bad_item: ``"error"`` raises on the first bad item; ``"skip"`` drops it and records a
            warning in ``LoraDataset.warnings``.
        min_side: Images whose shorter side is below this many pixels are bad items. Larger
            images smaller than the training size are upscaled.
        caption_extension: Suffix of caption files in the folder layouts (``.txt``, ``.caption``).

    Returns:
        The dataset.

    Raises:
        DatasetError: For a missing folder or metadata, a malformed metadata file, a bad item
            with ``on_bad_item="error"``, or when no usable item is left.
    """
    if on_bad_item not in ("skip", "error"):
        raise DatasetError(f'on_bad_item must be "skip" or "error", not {on_bad_item!r}')
    if not caption_extension.startswith(".") or len(caption_extension) < 2:
        raise DatasetError(f"caption_extension must look like .txt or .caption (got {caption_extension!r})")
    root_path = Path(path).expanduser().resolve()
    layout, meta, root = _find_metadata(root_path, caption_extension)
    if layout == "kohya":
        rows = _read_kohya(meta, caption_extension)
    elif layout == "folder":
        rows = [(*r, 1) for r in _read_folder(meta, caption_extension)]
    else:
        rows = [(*r, 1) for r in (_read_csv if layout == "csv" else _read_jsonl)(meta)]
    warnings: list[str] = []
    items: list[DatasetItem] = []
    for lineno, file_name, caption, repeats in rows:
        where = f"{meta}:{lineno}" if lineno else str(root / file_name)
        try:
            item = _check_item(root, file_name, caption, where, layout, min_side, caption_extension)
            items.append(item if repeats == 1 else replace(item, repeats=repeats))
        except DatasetError as exc:
            if on_bad_item == "error":
                raise
            warnings.append(f"skipped: {exc}")
    if not items:
        raise DatasetError(
            f"no usable items in {meta}: " + (warnings[0] if warnings else "the metadata is empty")
        )
    return LoraDataset(root=root, layout=layout, items=items, warnings=warnings)


def _check_item(
    root: Path, file_name: str, caption: str, where: str, layout: str, min_side: int, caption_extension: str
) -> DatasetItem:
    if not file_name:
        raise DatasetError(f"{where}: empty file_name: fill it in or delete the row")
    caption = caption.strip()
    if not caption:
        fix = (
            f"write a caption into {Path(file_name).with_suffix(caption_extension)}"
            if layout in ("folder", "kohya")
            else "fill in its text"
        )
        raise DatasetError(f"{where}: empty caption for {file_name}: {fix}")
    image_path = (root / file_name).resolve()
    if not image_path.is_file():
        raise DatasetError(f"{where}: image {image_path} does not exist: add it or remove the row")
    try:
        img = load_rgb(image_path)
    except DatasetError as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    if min(img.size) < min_side:
        raise DatasetError(
            f"{where}: image {image_path} is {img.size[0]}x{img.size[1]}, below the {min_side}px minimum: "
            "use a larger image or remove it"
        )
    return DatasetItem(
        image_path=image_path,
        caption=caption,
        file_name=file_name,
        size=img.size,
        digest=file_digest(image_path),
    )


def center_crop_box(size: tuple[int, int], params: PreprocessParams) -> tuple[int, int]:
    """Top/left of the centre crop after :func:`preprocess_image`'s resize (torchvision's rounding).

    Args:
        size: Source image size ``(width, height)``.
        params: Target size.

    Returns:
        ``(top, left)`` in resized pixels.
    """
    rw, rh = _resized_size(size, params)
    return int(round((rh - params.height) / 2.0)), int(round((rw - params.width) / 2.0))


def random_crop_box(size: tuple[int, int], params: PreprocessParams, rng: random.Random) -> tuple[int, int]:
    """A uniformly random crop position after the resize.

    Args:
        size: Source image size ``(width, height)``.
        params: Target size.
        rng: The generator to draw from.

    Returns:
        ``(top, left)`` in resized pixels.
    """
    rw, rh = _resized_size(size, params)
    return rng.randint(0, rh - params.height), rng.randint(0, rw - params.width)


def _resized_size(size: tuple[int, int], params: PreprocessParams) -> tuple[int, int]:
    w, h = size
    scale = max(params.width / w, params.height / h)
    return max(params.width, int(round(w * scale))), max(params.height, int(round(h * scale)))


def preprocess_image(
    img: Image.Image,
    params: PreprocessParams,
    *,
    crop: tuple[int, int] | None = None,
    flip: bool = False,
) -> torch.Tensor:
    """Resizes (bilinear), crops, optionally flips and normalises one image.

    Args:
        img: An RGB image.
        params: Target size.
        crop: ``(top, left)`` of the crop in resized pixels; ``None`` is the centre crop.
        flip: Flip horizontally (after cropping).

    Returns:
        A float32 tensor ``[3, height, width]`` in [-1, 1].
    """
    top, left = crop if crop is not None else center_crop_box(img.size, params)
    rw, rh = _resized_size(img.size, params)
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.BILINEAR)
    img = img.crop((left, top, left + params.width, top + params.height))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def describe(items: Sequence[DatasetItem]) -> str:
    """One-line summary of a dataset's items, for logs.

    Args:
        items: The items.

    Returns:
        E.g. ``"12 images, 512x512..1024x768"``.
    """
    if not items:
        return "0 images"
    sizes = sorted(it.size for it in items)
    return f"{len(items)} images, {sizes[0][0]}x{sizes[0][1]}..{sizes[-1][0]}x{sizes[-1][1]}"
