"""Shared machinery of the TFDS builders: features, image handling, counts, the base builder.

Every builder writes records in exactly `imphmr_jax.data.schema`'s RECORD_FIELDS layout (plus
VARIANT_FIELDS for the synthetic multi-view / video configs), stored as ArrayRecord files and read
back with `tfds.data_source` / `builder.as_data_source()`. TensorFlow is never imported: every
feature is a `tfds.features.Tensor` (bytes fields are `Tensor(shape=(), dtype=np.object_)`) and
images are stored as encoded JPEG/PNG bytes, decoded with Pillow.

Atomicity: TFDS prepares a dataset inside `<data_dir>/<name>/<config>/incomplete.XXXXXX_<version>/`
and renames it to `<version>/` only after every split and `dataset_info.json` are written; an
exception removes the temporary folder, and a killed process leaves only an `incomplete.*` folder,
which `tfds.data_source` never reads (it looks for `<version>/dataset_info.json`). `build()` in
`imphmr_jax.data.builders` removes such stale folders before building again.
"""
from __future__ import annotations

import io
import logging
import math
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from imphmr_jax.data import schema

log = logging.getLogger("imphmr_jax.data.builders")

ON_BAD_IMAGE_CHOICES = ("skip", "error")


def record_features(variant: bool = False) -> tfds.features.FeaturesDict:
    """The TFDS features of one record: `schema.RECORD_FIELDS` (+ `VARIANT_FIELDS` if `variant`)."""
    fields = {**schema.RECORD_FIELDS, **(schema.VARIANT_FIELDS if variant else {})}
    feats = {}
    for name, (shape, dtype) in fields.items():
        if shape is None:
            feats[name] = tfds.features.Tensor(shape=(), dtype=np.object_)
        else:
            feats[name] = tfds.features.Tensor(shape=shape, dtype=dtype)
    return tfds.features.FeaturesDict(feats)


class BadImageError(ValueError):
    """An image file that is missing or cannot be decoded (names the file)."""


def decode_image(data: bytes, what: str = "image") -> Image.Image:
    """Fully decode encoded image bytes with Pillow; a corrupt/truncated file is a BadImageError."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # a truncated JPEG/PNG raises here ("image file is truncated")
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data
        raise BadImageError(f"{what}: cannot decode image ({type(e).__name__}: {e})") from e
    return img


def read_image_file(path) -> tuple[bytes, Image.Image]:
    """(original file bytes, decoded image) of `path`; a missing/corrupt file is a BadImageError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadImageError(f"{path}: cannot read image file ({e.strerror or e})") from e
    if not data:
        raise BadImageError(f"{path}: image file is empty")
    return data, decode_image(data, str(path))


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """RGB JPEG bytes of `img`."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def stored_image_bytes(data: bytes, img: Image.Image) -> bytes:
    """The bytes to store when not cropping: the original file if JPEG/PNG, else a PNG re-encode."""
    if img.format in ("JPEG", "PNG"):
        return data
    return encode_png(img.convert("RGB"))


def encode_mask(mask: np.ndarray) -> bytes:
    """Single-channel PNG of a boolean silhouette (0 background, 255 person)."""
    return encode_png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"))


def crop_box(center, scale, margin: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box (x0, y0, x1, y1), x1/y1 exclusive, of side `margin * 200 * scale` around
    `center` (pixels), clipped to the image; None if nothing of it lies inside the image."""
    half = 0.5 * margin * 200.0 * float(scale)
    cx, cy = float(center[0]), float(center[1])
    eps = 1e-3  # float32 fuzz (scale 0.3 -> side 60.0000024 px) must not add a pixel
    x0 = max(0, int(math.floor(cx - half + eps)))
    y0 = max(0, int(math.floor(cy - half + eps)))
    x1 = min(int(width), int(math.ceil(cx + half - eps)))
    y1 = min(int(height), int(math.ceil(cy + half - eps)))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class Counts(dict):
    """Named counters of one split's build (examples written, skipped ones by reason, flags)."""

    def add(self, key: str, n: int = 1) -> None:
        self[key] = int(self.get(key, 0)) + int(n)


class HumanBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of every imphmr_jax builder: schema features, ArrayRecord, build counts in metadata.

    Subclasses implement `_split_generators` and call `self._finish_split(split, counts)` at the
    end of each split's generator; the counts and the build options are stored in the dataset's
    `metadata.json` (`builder.info.metadata`: {"options": {...}, "counts": {split: {...}}}).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release (imphmr_jax record schema)."}
    VARIANT = False  # records carry schema.VARIANT_FIELDS
    # Builders that read the user's files from `manual_dir` (other than the SPIN/PARE npz ones,
    # which `builders.build` checks itself) set MANUAL_DIR_REQUIRED and a hint of what the folder
    # holds, and implement `check_manual_dir`: `builders.build` calls it before TFDS starts.
    MANUAL_DIR_REQUIRED = False
    MANUAL_DIR_HINT = ""
    # Keep records in key order (the annotation file's row order / generation order) so that
    # index i of a source is reproducible and sequences stay contiguous; pipelines shuffle.

    def __init__(self, *, progress: bool = True, **kwargs):
        self._progress = bool(progress)
        if not hasattr(self, "_options"):
            self._options = {}
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @property
    def options(self) -> dict:
        """The build options that determine the content (stored in metadata['options'])."""
        return dict(self._options)

    def _is_variant(self) -> bool:
        return self.VARIANT

    def check_manual_dir(self, manual_dir) -> None:
        """Pre-flight check of the user's files in `manual_dir` (MANUAL_DIR_REQUIRED builders):
        raise an error naming the file and the key or entry that is missing or malformed, before
        anything is written. The base builder reads no files and has nothing to check."""
        del manual_dir

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(self.__doc__ or "").strip(),
            features=record_features(self._is_variant()),
            metadata=tfds.core.MetadataDict(),
            # Keep records in key order (the annotation file's row order / generation order) so
            # that index i of a source is reproducible and sequences stay contiguous; the input
            # pipeline shuffles.
            disable_shuffling=True,
        )

    def _finish_split(self, split: str, counts: Counts) -> None:
        meta = self.info.metadata
        meta["options"] = _jsonable(self._options)
        meta.setdefault("counts", {})[split] = dict(counts)
        log.info("%s/%s: %s", self.name, split, dict(counts))
        if self._progress:
            skipped = {k: v for k, v in counts.items() if k.startswith("skipped_") and v}
            print(f"[{self.name}/{split}] wrote {counts.get('written', 0)} examples"
                  + (f"; skipped {skipped}" if skipped else "")
                  + "".join(f"; {k}={v}" for k, v in counts.items()
                            if v and k != "written" and not k.startswith("skipped_")))

    def _generate_examples(self, *args, **kwargs) -> Iterator[tuple[Any, dict]]:
        raise NotImplementedError  # subclasses pass their own generators from _split_generators


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
