"""Builders of the real datasets from SPIN/PARE-style annotation npz files plus image folders.

Manual directory layout (one per dataset, passed as `manual_dir`): the dataset root, i.e. the folder
that the npz `imgname` entries are relative to (e.g. `images/S1_...jpg` for Human3.6M,
`imageFiles/<seq>/image_00000.jpg` for 3DPW, `train2014/COCO_...jpg` for COCO), with the annotation
npz files either directly in it or in its `dataset_extras/` subfolder. The npz file names are
SPIN's / PARE's (`DATASET_FILES` of `nkolot/SPIN:config.py` and PARE's EFT files); see
`docs/datasets.md` and each builder's `SPLIT_FILES` (the first existing candidate is used).

npz keys (docs/datasets.md#npz-keys): `imgname` (N,) str, `center` (N,2) px, `scale` (N,) = box side
/ 200 are required; optional `part` (N,24,3), `openpose` (N,25,3), `S` (N,24,4) metres + conf,
`pose` (N,72) (or (N,24,3)), `shape` (N,10), `has_smpl` (N,), `gender` (N,), `maskname` (N,) (LSP
test). Missing optional keys take SPIN's defaults: keypoints zeros, pose/betas zeros, has_smpl = 1
if `pose` is present else 0 (an explicit `has_smpl` key wins), has_pose_3d = 1 iff `S` is present
(SPIN), gender -1.

Record mapping: keypoints_2d = concat(openpose, part) -> (49, 3) (SPIN's order); joints_3d = S;
betas = shape; gender parsed by `parse_gender` ('m'/b'm'/'male' -> 0, 'f'/b'f'/'female' -> 1,
''/'n'/'neutral' -> -1; integer arrays are taken as 0 male / 1 female / -1 unknown). SPIN's own
parse `0 if str(g) == 'm' else 1` reads b'm' as female; this one does not. Camera intrinsics and
translation are not part of these files: intrinsics/cam_t zeros, has_camera 0.

Invalid labels (counted per split in metadata['counts']):
  * NaN/inf in center or scale, or scale <= 0  -> sample skipped (`skipped_bad_box`);
  * NaN/inf in pose or shape                   -> has_smpl 0, pose and betas zeroed (`nan_smpl`);
  * NaN/inf in S                               -> has_pose_3d 0, joints_3d zeroed (`nan_pose_3d`);
  * NaN/inf in a 2D keypoint row               -> that row (x, y, conf) zeroed (`nan_keypoints`
    counts samples with at least one such row).
Images: a missing or undecodable image is skipped and counted (`skipped_missing_image`,
`skipped_corrupt_image`) with `on_bad_image='skip'` (default) or raises a BadImageError naming the
file with `on_bad_image='error'`.

Pre-cropping (`precrop_margin=X`): the stored image is the square of side X * 200 * scale around the
centre, clipped to the image, re-encoded as JPEG; centre and all 2D keypoint x, y are shifted by the
crop's top-left corner (x, y) (scale unchanged). Without it the original file bytes are stored.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tqdm import tqdm

from imphmr_jax.cli import InputError
from imphmr_jax.data import schema
from imphmr_jax.data.builders.base import (
    ON_BAD_IMAGE_CHOICES,
    BadImageError,
    Counts,
    HumanBuilder,
    crop_box,
    encode_jpeg,
    encode_mask,
    read_image_file,
    stored_image_bytes,
)

ANNOTATION_SUBDIRS = ("", "dataset_extras")

# key -> trailing shape (after N); None = 1-D per-sample strings/flags.
_KEY_SHAPES = {
    "center": (2,),
    "scale": (),
    "part": (24, 3),
    "openpose": (25, 3),
    "S": (24, 4),
    "pose": (72,),
    "shape": (10,),
    "has_smpl": (),
    "gender": (),
    "maskname": (),
}
REQUIRED_KEYS = ("imgname", "center", "scale")


class AnnotationError(ValueError):
    """A malformed annotation file (the message names the file and the key)."""


def _to_str(v) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8")
    return str(v)


def parse_gender(value) -> int:
    """schema gender code of one npz `gender` entry: 0 male, 1 female, -1 unknown.

    Accepts 'm'/'f'/'male'/'female' as str or bytes (b'm' is male, unlike SPIN's str() parse),
    ''/'n'/'neutral'/'u'/'unknown' -> -1, and integers 0/1/-1 (schema codes)."""
    if isinstance(value, (bytes, np.bytes_, str, np.str_)):
        s = _to_str(value).strip().lower()
        if s in ("m", "male"):
            return schema.GENDER_MALE
        if s in ("f", "female"):
            return schema.GENDER_FEMALE
        if s in ("", "n", "neutral", "u", "unknown", "-1"):
            return schema.GENDER_UNKNOWN
        raise ValueError(f"unknown gender {value!r} (expected 'm', 'f' or 'n')")
    if isinstance(value, (int, np.integer, float, np.floating)) and float(value) in (-1.0, 0.0, 1.0):
        return int(value)
    raise ValueError(f"unknown gender {value!r} (expected 'm', 'f' or 'n')")


def load_annotations(path) -> dict[str, np.ndarray]:
    """Read and validate one SPIN/PARE npz file; returns {key: array} with N rows each.

    Raises FileNotFoundError if missing; AnnotationError naming the file and the key for a missing
    required key, a wrong shape, a row count different from `imgname`'s, or an unparsable gender."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with np.load(path, allow_pickle=True) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise AnnotationError(f"{path}: cannot read as an npz file ({type(e).__name__}: {e})") from e
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise AnnotationError(f"{path}: missing required key {key!r} "
                                  f"(keys present: {sorted(raw)})")
    names = np.asarray(raw["imgname"]).reshape(-1)
    n = names.shape[0]
    out = {"imgname": np.array([_to_str(s) for s in names], dtype=object)}
    for key, tail in _KEY_SHAPES.items():
        if key not in raw:
            continue
        a = np.asarray(raw[key])
        if key == "scale" and a.shape == (n, 1):
            a = a[:, 0]
        if key == "pose" and a.shape == (n, 24, 3):
            a = a.reshape(n, 72)
        if a.shape != (n, *tail):
            want = "(N, " + ", ".join(map(str, tail)) + ")" if tail else "(N,)"
            raise AnnotationError(f"{path}: key {key!r} must have shape {want} with N={n} "
                                  f"(len of 'imgname'), got {a.shape}")
        if key in ("gender", "maskname"):
            if key == "gender":
                try:
                    a = np.array([parse_gender(g) for g in a], np.int32)
                except ValueError as e:
                    raise AnnotationError(f"{path}: key 'gender': {e}") from e
            else:
                a = np.array([_to_str(s) for s in a], dtype=object)
        elif key == "has_smpl":
            a = a.astype(np.int32)
        else:
            try:
                a = a.astype(np.float32)
            except (TypeError, ValueError) as e:
                raise AnnotationError(f"{path}: key {key!r} is not numeric ({a.dtype})") from e
        out[key] = a
    return out


def annotation_record(ann: dict, i: int, counts: Counts | None = None) -> dict | None:
    """The record (without image/mask) of sample `i` of validated annotations `ann`; None if the
    sample must be skipped (bad box). Applies the NaN rules of the module docstring."""
    counts = counts if counts is not None else Counts()
    center = ann["center"][i]
    scale = ann["scale"][i]
    if not (np.all(np.isfinite(center)) and np.isfinite(scale) and scale > 0):
        counts.add("skipped_bad_box")
        return None
    op = ann["openpose"][i] if "openpose" in ann else np.zeros((25, 3), np.float32)
    part = ann["part"][i] if "part" in ann else np.zeros((24, 3), np.float32)
    kp = np.concatenate([op, part], axis=0).astype(np.float32)
    bad_rows = ~np.all(np.isfinite(kp), axis=1)
    if bad_rows.any():
        kp[bad_rows] = 0.0
        counts.add("nan_keypoints")

    has_pose = "pose" in ann
    pose = ann["pose"][i] if has_pose else np.zeros(72, np.float32)
    betas = ann["shape"][i] if "shape" in ann else np.zeros(10, np.float32)
    if "has_smpl" in ann:
        has_smpl = int(ann["has_smpl"][i])
    else:
        has_smpl = 1 if has_pose else 0
    if not (np.all(np.isfinite(pose)) and np.all(np.isfinite(betas))):
        pose, betas, has_smpl = np.zeros(72, np.float32), np.zeros(10, np.float32), 0
        counts.add("nan_smpl")

    if "S" in ann:
        joints_3d, has_3d = ann["S"][i], 1
        if not np.all(np.isfinite(joints_3d)):
            joints_3d, has_3d = np.zeros((24, 4), np.float32), 0
            counts.add("nan_pose_3d")
    else:
        joints_3d, has_3d = np.zeros((24, 4), np.float32), 0
    gender = int(ann["gender"][i]) if "gender" in ann else schema.GENDER_UNKNOWN
    return schema.empty_record(
        imgname=ann["imgname"][i], center=center, scale=scale, keypoints_2d=kp,
        joints_3d=joints_3d, pose=pose, betas=betas, has_smpl=has_smpl, has_pose_3d=has_3d,
        gender=gender)


def find_annotation_file(root, candidates: Sequence[str]) -> epath.Path:
    """The first existing `root/[dataset_extras/]<candidate>`; FileNotFoundError listing all tried."""
    root = epath.Path(root)
    tried = []
    for name in candidates:
        for sub in ANNOTATION_SUBDIRS:
            p = root / sub / name if sub else root / name
            tried.append(os.fspath(p))
            if p.exists():
                return p
    raise FileNotFoundError("annotation file not found; looked for: " + ", ".join(tried))


class RealNpzBuilder(HumanBuilder, skip_registration=True):
    """Base of the real-dataset builders (SPIN/PARE npz + images); see the module docstring."""

    # split -> candidate npz names (first found wins); subclasses set it.
    SPLIT_FILES: dict[str, tuple[str, ...]] = {}
    IMAGE_FOLDER_HINT = ""  # what the dataset root usually contains (for errors/docs)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the dataset root (the folder the npz `imgname` paths are relative to) as manual_dir; "
        "put the SPIN/PARE npz files in it or in its dataset_extras/ subfolder. See docs/datasets.md.")

    def __init__(self, *, precrop_margin: float | None = None, on_bad_image: str = "skip",
                 jpeg_quality: int = 95, splits: Sequence[str] | None = None,
                 image_dir: str | None = None, mask_dir: str | None = None, **kwargs):
        if on_bad_image not in ON_BAD_IMAGE_CHOICES:
            raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE_CHOICES}, "
                             f"got {on_bad_image!r}")
        if precrop_margin is not None and not (float(precrop_margin) > 0):
            raise ValueError(f"precrop_margin must be > 0 (or None), got {precrop_margin!r}")
        if splits is not None:
            unknown = set(splits) - set(self.SPLIT_FILES)
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown splits {sorted(unknown)}; "
                                 f"available: {sorted(self.SPLIT_FILES)}")
        self._options = {
            "precrop_margin": None if precrop_margin is None else float(precrop_margin),
            "jpeg_quality": int(jpeg_quality),
            "splits": sorted(splits) if splits is not None else sorted(self.SPLIT_FILES),
        }
        self._on_bad_image = on_bad_image
        self._image_dir = image_dir
        self._mask_dir = mask_dir
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir)
        image_root = epath.Path(self._image_dir) if self._image_dir else root
        if self._mask_dir:
            mask_root = epath.Path(self._mask_dir)
        elif (root / "upi-s1h").exists():
            mask_root = root / "upi-s1h"
        else:
            mask_root = root
        # Resolve and validate every annotation file before writing anything.
        anns = {}
        for split in self._options["splits"]:
            path = find_annotation_file(root, self.SPLIT_FILES[split])
            anns[split] = (path, load_annotations(path))
        return {split: self._generate_split(split, path, ann, image_root, mask_root)
                for split, (path, ann) in anns.items()}

    def _generate_split(self, split, path, ann, image_root, mask_root) -> Iterator:
        counts = Counts(written=0, total=len(ann["imgname"]))
        margin = self._options["precrop_margin"]
        n = len(ann["imgname"])
        for i in tqdm(range(n), desc=f"{self.name}/{split}", disable=not self._progress,
                      mininterval=1.0):
            rec = annotation_record(ann, i, counts)
            if rec is None:
                continue
            img_path = image_root / ann["imgname"][i]
            try:
                data, img = read_image_file(img_path)
            except BadImageError as e:
                if self._on_bad_image == "error":
                    raise BadImageError(f"{self.name}/{split} sample {i} ({path}): {e}") from e
                counts.add("skipped_missing_image" if not img_path.exists()
                           else "skipped_corrupt_image")
                continue
            mask = None
            if "maskname" in ann and ann["maskname"][i]:
                mask = self._read_mask(mask_root / ann["maskname"][i], img.size, counts)
            if margin is not None:
                box = crop_box(rec["center"], rec["scale"], margin, img.width, img.height)
                if box is None:
                    counts.add("skipped_box_outside_image")
                    continue
                x0, y0, x1, y1 = box
                rec["image"] = encode_jpeg(img.crop(box), self._options["jpeg_quality"])
                shift = np.array([x0, y0], np.float32)
                rec["center"] = rec["center"] - shift
                rec["keypoints_2d"][:, :2] -= shift
                if mask is not None:
                    mask = mask[y0:y1, x0:x1]
            else:
                rec["image"] = stored_image_bytes(data, img)
            if mask is not None:
                rec["mask"], rec["has_mask"] = encode_mask(mask), np.int32(1)
            schema.validate_record(rec)
            counts.add("written")
            counts.add("has_smpl", int(rec["has_smpl"]))
            counts.add("has_pose_3d", int(rec["has_pose_3d"]))
            yield i, rec
        if counts["written"] == 0:
            raise InputError(f"{self.name}/{split}: no example could be written from {path} "
                             f"(image root {image_root}); counts: {dict(counts)}")
        self._finish_split(split, counts)

    def _read_mask(self, path, size, counts) -> np.ndarray | None:
        try:
            _, m = read_image_file(path)
        except BadImageError:
            counts.add("missing_mask")
            return None
        if m.size != size:
            counts.add("mask_size_mismatch")
            return None
        return np.asarray(m.convert("L")) > 0


class H36m(RealNpzBuilder):
    """Human3.6M (SPIN npz): train, and the test protocols P1 (S9, S11, all cameras, every 5th
    frame) and P2 (camera 60457274 only) as splits `test_p1`, `test_p2`."""

    name = "h36m"
    SPLIT_FILES = {
        "train": ("h36m_train.npz", "h36m_single_train_openpose.npz", "h36m_mosh_train.npz"),
        "test_p1": ("h36m_valid_protocol1.npz",),
        "test_p2": ("h36m_valid_protocol2.npz",),
    }
    IMAGE_FOLDER_HINT = "images/"


class MpiInf3dhp(RealNpzBuilder):
    """MPI-INF-3DHP (SPIN npz): train and test."""

    name = "mpi_inf_3dhp"
    SPLIT_FILES = {
        "train": ("mpi_inf_3dhp_train.npz",),
        "test": ("mpi_inf_3dhp_valid.npz", "mpi_inf_3dhp_test.npz"),
    }
    IMAGE_FOLDER_HINT = "S1/Seq1/imageFrames/..., mpi_inf_3dhp_test_set/TS1/imageSequence/..."


class Pw3d(RealNpzBuilder):
    """3DPW (SPIN/PARE npz): train and test."""

    name = "pw3d"
    SPLIT_FILES = {
        "train": ("3dpw_train.npz",),
        "test": ("3dpw_test.npz", "3dpw_test_with_mmpose.npz"),
    }
    IMAGE_FOLDER_HINT = "imageFiles/<sequence>/image_XXXXX.jpg"


class Pw3dOcc(RealNpzBuilder):
    """3DPW-OCC (the occlusion subset of 3DPW used by OOH/PARE): test."""

    name = "pw3d_occ"
    SPLIT_FILES = {"test": ("3dpw_occ_test.npz", "3dpw-occ_test.npz")}
    IMAGE_FOLDER_HINT = "imageFiles/<sequence>/image_XXXXX.jpg"


class CocoEft(RealNpzBuilder):
    """COCO 2014 train with EFT SMPL fits (PARE's coco_2014_train_eft.npz)."""

    name = "coco_eft"
    SPLIT_FILES = {"train": ("coco_2014_train_eft.npz",)}
    IMAGE_FOLDER_HINT = "train2014/COCO_train2014_XXXXXXXXXXXX.jpg"


class MpiiEft(RealNpzBuilder):
    """MPII with EFT SMPL fits (PARE's mpii_train_eft.npz)."""

    name = "mpii_eft"
    SPLIT_FILES = {"train": ("mpii_train_eft.npz",)}
    IMAGE_FOLDER_HINT = "images/XXXXXXXXX.jpg"


class LspetEft(RealNpzBuilder):
    """LSP-extended (HR-LSPET) with EFT SMPL fits (PARE's hr-lspet_train_eft.npz)."""

    name = "lspet_eft"
    SPLIT_FILES = {"train": ("hr-lspet_train_eft.npz",)}
    IMAGE_FOLDER_HINT = "imXXXXX.png"


class Lsp(RealNpzBuilder):
    """LSP test (SPIN's lsp_dataset_test.npz); silhouettes from UPI-S1H `maskname` if present
    (looked up under `mask_dir`, default `<manual_dir>/upi-s1h` if it exists, else manual_dir)."""

    name = "lsp"
    SPLIT_FILES = {"test": ("lsp_dataset_test.npz",)}
    IMAGE_FOLDER_HINT = "images/imXXXX.jpg"


REAL_BUILDERS = {cls.name: cls for cls in
                 (H36m, MpiInf3dhp, Pw3d, Pw3dOcc, CocoEft, MpiiEft, LspetEft, Lsp)}
