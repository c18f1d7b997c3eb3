"""`zju_mocap`: ZJU-MoCap multi-view videos from the user's own copy, in the record layout of
`imphmr_jax.data.schema` with VARIANT_FIELDS (sequence = subject, frame, view = camera).

Layout read (the one Neural Body reads and HumanNeRF's / ActorsNeRF's
`tools/prepare_zju_mocap/prepare_dataset.py` prepare from); manual_dir is the folder holding the
`CoreView_*` folders:

    <root>/CoreView_<subject>/
      annots.npy   a pickled dict (np.load(path, allow_pickle=True).item()):
                   'cams': {'K': C x (3, 3), 'R': C x (3, 3), 'T': C x (3, 1) MILLIMETRES,
                            'D': C x (5, 1) OpenCV k1 k2 p1 p2 k3 (optional: no distortion)}
                   'ims':  T x {'ims': [C image paths relative to the subject folder]}
      Camera_B1/000000.jpg ...     the paths in 'ims' (CoreView_313 / 315:
                                   'Camera (1)/CoreView_313_Camera_(1)_0001_<time>.jpg')
      mask/<path>.png, mask_cihp/<path>.png   silhouettes, non-zero = person; the union of those
                   present is used (ActorsNeRF; HumanNeRF requires both, Neural Body reads
                   mask_cihp only); at least one is required
      new_params/<i>.npy (else params/<i>.npy)   per-frame SMPL, pickled dicts:
                   'poses' (1, 72), 'Rh' (1, 3), 'Th' (1, 3) metres, 'shapes' (1, 10)

Conventions, read from chungyiweng/humannerf tools/prepare_zju_mocap/prepare_dataset.py and
core/utils/camera_util.py (apply_global_tfm_to_camera), and zju3dv/neuralbody
lib/datasets/light_stage/multi_view_dataset.py:
  * world -> camera: X_c = R X_w + T / 1000 (T in millimetres; metres everywhere else);
  * SMPL in the world: X_w = R(Rh) SMPL(poses, shapes) + Th, where SMPL() is the plain SMPL forward
    pass (rest root joint J0, poses[:3] rotating about J0, no translation) and R(Rh) the
    Rodrigues rotation of Rh about the ORIGIN (HumanNeRF: body frame = R(Rh)^T (X_w - Th); Neural
    Body: xyz_smpl = (xyz_world - Th) @ R(Rh)). In the released fits poses[:3] is ~0 and Rh holds
    the global orientation; any poses[:3] is handled;
  * a frame's params file is the number in its image file name ('000123.jpg' -> 123.npy;
    313 / 315: '..._Camera_(k)_0123_<time>.jpg' -> 123.npy), as Neural Body; HumanNeRF uses the
    frame's position in 'ims', the same number for the released annots (a name without a number
    falls back to the position);
  * K is OpenCV's (pixel (0, 0)'s centre at (0, 0)); the project puts pixel centres at +0.5.

Record mapping (one record per subject, frame and camera, in that order):
  * pose_world = [rotvec(R(Rh) R(poses[:3])), poses[3:]]; betas = shapes; transl_world =
    R(Rh) J0 + Th - J0 with J0 the body model's rest root joint for these betas, so that
    forward(body, pose_world, betas).vertices + transl_world = R(Rh) SMPL(poses, shapes) + Th
    exactly (SMPL rotates the root about J0, Rh rotates about the origin). J0 depends on the body
    model: build with the body you train with (for real data, the SMPL model of the fits);
  * extrinsics = [R | T / 1000]; intrinsics = (sx fx, sy fy, sx (cx + 1/2), sy (cy + 1/2)) of the
    stored image resized by (sx, sy) (skew ignored);
  * pose (camera-frame root), cam_t, joints_3d and keypoints_2d as the synthetic records (SPIN
    joints of the body; zeros and has_pose_3d = 0 when the body lacks the 'vertex21' and 'extra9'
    regressors), box from the mask and the keypoints; has_smpl = has_camera = has_mask = 1,
    gender -1 (neutral fits);
  * image: undistorted with D (the maps of OpenCV's undistort with the same K; `undistort=False`
    keeps the distorted image, as HumanNeRF does), resized by `image_scale` (HumanNeRF's 0.5) or
    so that the longer side is `image_size`, JPEG; the mask alike (area-averaged, > 1/2);
  * sequence = int(subject) (e.g. 313) when numeric, else the subject's position in the train +
    test lists; frame = position in annots['ims']; view = camera index in annots['cams']
    (0 = Camera_B1); imgname = 'CoreView_<subject>/<image path>'.

Splits: 'train' = `train_subjects`, 'test' = `test_subjects`; by default ActorsNeRF's category-level
split (train 313, 315, 377, 386, 390, 392, 396; held out 387, 393, 394). An empty list leaves the
split out. Everything is checked before TFDS writes anything (`check_manual_dir`): a missing
folder, annots.npy, key, image, mask or params file, or a wrong shape, is an error naming the file
and the key; an image that cannot be decoded stops the build with a BadImageError naming it.

Why one module: the layout it reads, the conventions (millimetres, Rh about the origin, OpenCV's
pixel centres and lens model) and the record mapping must change together, and the pre-flight scan
and the writer share its SubjectFrames.

Command line (for the options `python -m imphmr_jax.data.build` does not know):
    python -m imphmr_jax.data.builders.zju_mocap --root /data/zju_mocap --data_dir DIR \
        [--train_subjects 313,315 --test_subjects 387 --cameras 0,6,12,18 --frame_stride 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from typing import Iterator, Optional, Sequence

import jax
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from imphmr_jax.cli import InputError, expand_path
from imphmr_jax.data import schema
from imphmr_jax.data.builders.base import (BadImageError, Counts, HumanBuilder, encode_jpeg,
                                           encode_mask, read_image_file)
from imphmr_jax.data.builders.real import AnnotationError

if __name__ == "__main__":
    # `python -m imphmr_jax.data.builders.zju_mocap`: run the CLI of the package's own copy of
    # this module. Defining the builder here as well would register 'zju_mocap' with TFDS twice.
    from imphmr_jax import cli
    from imphmr_jax.data.builders import zju_mocap as _module

    cli.run(_module.main)

DEFAULT_TRAIN_SUBJECTS = ("313", "315", "377", "386", "390", "392", "396")
DEFAULT_TEST_SUBJECTS = ("387", "393", "394")
PARAMS_DIRS = ("new_params", "params")
MASK_DIRS = ("mask", "mask_cihp")
PARAM_KEYS = {"poses": 72, "Rh": 3, "Th": 3, "shapes": 10}
_CAMERA_KEYS = ("K", "R", "T")
_313_NAME = re.compile(r"_\((\d+)\)_(\d+)_")
_FORWARD_BATCH = 64


@dataclasses.dataclass
class SubjectFrames:
    """What a pre-flight scan of one subject found (every file checked to exist).

    subject: the folder suffix ('313'); folder: the subject folder; sequence: its record id;
    cameras: the camera indices used; K (C, 3, 3), R (C, 3, 3), T (C, 3) metres, D (C, 5): those
    cameras; frames: positions in annots['ims']; images: [frame][camera] paths relative to the
    folder; masks: [frame][camera] tuple of the existing mask files; params: 'poses' (F, 72),
    'Rh' (F, 3), 'Th' (F, 3), 'shapes' (F, 10) float64; params_files: (F,) their paths.
    """

    subject: str
    folder: str
    sequence: int
    cameras: list
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    D: np.ndarray
    frames: list
    images: list
    masks: list
    params: dict
    params_files: list


def params_index(image_path: str, position: int) -> int:
    """Number of the SMPL params file of a frame (see the module doc): the number in the image
    file name, CoreView_313 / 315's frame number, or else the frame's position in annots['ims']."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    if stem.isdigit():
        return int(stem)
    m = _313_NAME.search(os.path.basename(image_path))
    return int(m.group(2)) if m else int(position)


def _annotation_array(value, path, key, shape):
    """`value` as a float64 array of `shape` (a trailing 1 squeezed), else AnnotationError."""
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{path}: {key} is not numeric ({e})") from e
    if a.shape != shape and a.shape[-1:] == (1,):
        a = a[..., 0]
    if a.shape != shape:
        raise AnnotationError(f"{path}: {key} must have shape {shape}, got {a.shape}")
    return a


def load_annots(folder: str) -> dict:
    """annots.npy of a subject folder, checked: {'K', 'R', 'T' (metres), 'D' (C, 5) arrays,
    'ims': list of per-frame path lists}. FileNotFoundError / AnnotationError naming the file and
    the key."""
    path = os.path.join(folder, "annots.npy")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annots.npy not found: {path} (ZJU-MoCap subject folders hold "
                                "annots.npy, the image folders and new_params/)")
    try:
        annots = np.load(path, allow_pickle=True)
        annots = annots.item() if annots.dtype == object and annots.shape == () else annots
    except Exception as e:  # noqa: BLE001 - numpy / pickle raise many types for bad files
        raise AnnotationError(f"{path}: cannot read as a pickled dict "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(annots, dict):
        raise AnnotationError(f"{path}: expected a pickled dict with keys 'cams' and 'ims', got "
                              f"{type(annots).__name__}")
    for key in ("cams", "ims"):
        if key not in annots:
            raise AnnotationError(f"annots.npy in {folder} has no key {key!r} (keys present: "
                                  f"{sorted(map(str, annots))})")
    cams = annots["cams"]
    if not isinstance(cams, dict):
        raise AnnotationError(f"{path}: 'cams' must be a dict with 'K', 'R', 'T', got "
                              f"{type(cams).__name__}")
    for key in _CAMERA_KEYS:
        if key not in cams:
            raise AnnotationError(f"annots.npy in {folder} has no key 'cams'/{key!r} (keys "
                                  f"present: {sorted(map(str, cams))})")
    n = len(cams["K"])
    out = {"K": _annotation_array(cams["K"], path, "'cams'/'K'", (n, 3, 3)),
           "R": _annotation_array(cams["R"], path, "'cams'/'R'", (n, 3, 3)),
           "T": _annotation_array(cams["T"], path, "'cams'/'T'", (n, 3)) / 1000.0}
    if "D" in cams:
        d = np.asarray(cams["D"], np.float64).reshape(n, -1)
        if d.shape[1] > 5 and np.any(d[:, 5:]):
            raise AnnotationError(f"{path}: 'cams'/'D' has {d.shape[1]} coefficients; only "
                                  "OpenCV's k1 k2 p1 p2 k3 model is supported")
        out["D"] = np.pad(d[:, :5], ((0, 0), (0, max(0, 5 - d.shape[1]))))
    else:
        out["D"] = np.zeros((n, 5))
    ims = []
    for t, entry in enumerate(annots["ims"]):
        if not isinstance(entry, dict) or "ims" not in entry:
            raise AnnotationError(f"annots.npy in {folder}: 'ims'[{t}] has no key 'ims'")
        ims.append([str(p) for p in entry["ims"]])
    out["ims"] = ims
    return out


def load_params(path: str) -> dict:
    """One frame's SMPL params file -> {'poses' (72,), 'Rh' (3,), 'Th' (3,), 'shapes' (10,)}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SMPL params file not found: {path}")
    try:
        p = np.load(path, allow_pickle=True)
        p = p.item() if p.dtype == object and p.shape == () else p
    except Exception as e:  # noqa: BLE001
        raise AnnotationError(f"{path}: cannot read as a pickled dict "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(p, dict):
        raise AnnotationError(f"{path}: expected a pickled dict with keys {sorted(PARAM_KEYS)}")
    out = {}
    for key, size in PARAM_KEYS.items():
        if key not in p:
            raise AnnotationError(f"{path} has no key {key!r} (keys present: "
                                  f"{sorted(map(str, p))})")
        out[key] = _annotation_array(np.asarray(p[key]).reshape(-1), path, repr(key), (size,))
    return out


def scan_subject(root: str, subject: str, sequence: int, *, cameras: Optional[Sequence[int]],
                 frame_start: int, frame_stride: int, max_frames: Optional[int],
                 params_dir: Optional[str]) -> SubjectFrames:
    """Check and index one subject's files (see the module doc); nothing is decoded."""
    folder = os.path.join(root, f"CoreView_{subject}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"ZJU-MoCap subject folder not found: {folder}")
    ann = load_annots(folder)
    path = os.path.join(folder, "annots.npy")
    n_cams = ann["K"].shape[0]
    cams = list(range(n_cams)) if cameras is None else [int(c) for c in cameras]
    bad = [c for c in cams if not 0 <= c < n_cams]
    if bad:
        raise InputError(f"cameras {bad} do not exist in {path} ({n_cams} cameras, 0-based)")
    positions = list(range(frame_start, len(ann["ims"]), frame_stride))
    if max_frames is not None:
        positions = positions[:max_frames]
    if not positions:
        raise InputError(f"{path}: no frame selected ({len(ann['ims'])} frames in 'ims', "
                         f"frame_start={frame_start}, frame_stride={frame_stride})")
    if params_dir is None:
        found = [d for d in PARAMS_DIRS if os.path.isdir(os.path.join(folder, d))]
        if not found:
            raise FileNotFoundError(f"no SMPL parameter folder in {folder}: looked for "
                                    + ", ".join(f"{d}/" for d in PARAMS_DIRS))
        params_dir = found[0]
    images, masks, params, files = [], [], [], []
    for t in positions:
        paths = ann["ims"][t]
        if len(paths) <= max(cams):
            raise AnnotationError(f"{path}: 'ims'[{t}]['ims'] lists {len(paths)} images, camera "
                                  f"{max(cams)} was requested")
        row, mrow = [], []
        for k in cams:
            rel = paths[k]
            if not os.path.isfile(os.path.join(folder, rel)):
                raise FileNotFoundError(f"image file not found: {os.path.join(folder, rel)} "
                                        f"(listed in {path} 'ims'[{t}]['ims'][{k}])")
            tried = [os.path.join(folder, d, os.path.splitext(rel)[0] + ".png")
                     for d in MASK_DIRS]
            present = tuple(p for p in tried if os.path.isfile(p))
            if not present:
                raise FileNotFoundError(f"no mask for image {os.path.join(folder, rel)}; looked "
                                        f"for {', '.join(tried)}")
            row.append(rel)
            mrow.append(present)
        images.append(row)
        masks.append(mrow)
        pfile = os.path.join(folder, params_dir, f"{params_index(paths[cams[0]], t)}.npy")
        params.append(load_params(pfile))
        files.append(pfile)
    stacked = {key: np.stack([p[key] for p in params]) for key in PARAM_KEYS}
    return SubjectFrames(subject=subject, folder=folder, sequence=sequence, cameras=cams,
                         K=ann["K"][cams], R=ann["R"][cams], T=ann["T"][cams], D=ann["D"][cams],
                         frames=positions, images=images, masks=masks, params=stacked,
                         params_files=files)


# ------------------------------------------------------------------------ geometry and pixels
def world_pose(poses, Rh, Th, root_rest):
    """ZJU's (poses (N, 72), Rh (N, 3), Th (N, 3)) -> (pose_world (N, 24, 3), transl_world (N, 3))
    in the project's convention (module doc); root_rest (N, 3) = the body's rest J0 per frame."""
    poses = np.asarray(poses, np.float64).reshape(-1, 24, 3)
    rh = Rotation.from_rotvec(np.asarray(Rh, np.float64))
    pose_world = poses.copy()
    pose_world[:, 0] = (rh * Rotation.from_rotvec(poses[:, 0])).as_rotvec()
    j0 = np.asarray(root_rest, np.float64)
    transl = rh.apply(j0) + np.asarray(Th, np.float64) - j0
    return pose_world, transl


def undistort_coords(K, D, width: int, height: int):
    """Source coordinates (u, v), each (height, width), in the distorted image of every pixel of
    the undistorted one (same K; OpenCV's pixel convention and distortion model k1 k2 p1 p2 k3):
    the pixel's normalised ray (x, y) = K^-1 (j, i, 1) is distorted and projected with K."""
    K = np.asarray(K, np.float64)
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    y = (ii - cy) / fy
    x = (jj - cx - skew * y) / fx
    k1, k2, p1, p2, k3 = np.asarray(D, np.float64)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return fx * xd + skew * yd + cx, fy * yd + cy


def remap_bilinear(image, u, v):
    """(H, W, C) or (H, W) array sampled at OpenCV-convention coordinates u, v (h, w) bilinearly,
    0 outside the image (OpenCV's constant border); float64 result."""
    img = np.asarray(image, np.float64)
    h, w = img.shape[:2]
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - u0, v - v0
    out = 0.0
    for du, dv, wt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                       (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
        val = img[np.clip(vv, 0, h - 1), np.clip(uu, 0, w - 1)]
        wt = np.where(ok, wt, 0.0)
        out = out + (wt[..., None] if img.ndim == 3 else wt) * val
    return out


def stored_size(width: int, height: int, image_scale: Optional[float],
                image_size: Optional[int]) -> tuple[int, int]:
    """(width, height) of the stored image: the longer side image_size, else scaled."""
    s = image_size / max(width, height) if image_size else float(image_scale)
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


def _resize(array_u8, size):
    """Area-average downscale (bilinear upscale) of an (H, W[, 3]) uint8 array to (W', H')."""
    img = Image.fromarray(array_u8)
    down = size[0] <= img.width and size[1] <= img.height
    if size == img.size:
        return np.asarray(img)
    return np.asarray(img.resize(size, Image.Resampling.BOX if down else
                                 Image.Resampling.BILINEAR))


def prepare_view(rgb, mask, K, D, *, undistort: bool, image_scale: Optional[float],
                 image_size: Optional[int], cache: Optional[dict] = None, cache_key=None):
    """One camera image as stored: (H, W, 3) uint8 RGB and (H, W) bool mask as read, OpenCV K
    (3, 3) and D (5,) -> undistorted (when ``undistort`` and D is not zero), resized (see
    :func:`stored_size`) image, mask, and the project's intrinsics [fx, fy, cx, cy] (4,) of the
    result (pixel centres at +0.5). ``cache`` keeps the undistortion maps by (cache_key, W, H)."""
    h, w = rgb.shape[:2]
    if undistort and np.any(D):
        key = (cache_key, w, h)
        maps = cache.get(key) if cache is not None else None
        if maps is None:
            maps = undistort_coords(K, D, w, h)
            if cache is not None:
                cache[key] = maps
        u, v = maps
        rgb = np.clip(np.round(remap_bilinear(rgb, u, v)), 0, 255).astype(np.uint8)
        mask = remap_bilinear(np.asarray(mask, np.float64), u, v) > 0.5
    size = stored_size(w, h, image_scale, image_size)
    sx, sy = size[0] / w, size[1] / h
    rgb = _resize(np.asarray(rgb, np.uint8), size)
    mask = _resize(np.where(mask, 255, 0).astype(np.uint8), size) > 127
    K = np.asarray(K, np.float64)
    intr = np.array([sx * K[0, 0], sy * K[1, 1], sx * (K[0, 2] + 0.5), sy * (K[1, 2] + 0.5)])
    return rgb, mask, intr


def _read_mask(paths, shape) -> np.ndarray:
    """Union (bool (H, W)) of the non-zero pixels of the mask files `paths`."""
    out = np.zeros(shape, bool)
    for p in paths:
        _, img = read_image_file(p)
        m = np.asarray(img)
        m = m[..., 0] if m.ndim == 3 else m
        if m.shape != shape:
            raise BadImageError(f"{p}: mask of size {m.shape[::-1]}, the image is {shape[::-1]}")
        out |= m != 0
    return out


# ------------------------------------------------------------------------------------ builder
class ZjuMocap(HumanBuilder):
    """ZJU-MoCap multi-view videos (your copy; see the module doc for the layout): one record per
    subject, frame and camera, with world SMPL, calibrated cameras and silhouettes."""

    name = "zju_mocap"
    VARIANT = True
    MANUAL_DIR_REQUIRED = True
    MANUAL_DIR_HINT = "the ZJU-MoCap root holding the CoreView_<subject> folders"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the ZJU-MoCap root (the folder with CoreView_313, CoreView_315, ...) as manual_dir; "
        "see docs/datasets.md.")

    def __init__(self, *, train_subjects: Sequence[str] = DEFAULT_TRAIN_SUBJECTS,
                 test_subjects: Sequence[str] = DEFAULT_TEST_SUBJECTS,
                 cameras: Optional[Sequence[int]] = None, frame_start: int = 0,
                 frame_stride: int = 1, max_frames: Optional[int] = None,
                 image_scale: float = 0.5, image_size: Optional[int] = None,
                 undistort: bool = True, body: str = "default",
                 j_regressor_extra: Optional[str] = None, params_dir: Optional[str] = None,
                 jpeg_quality: int = 95, **kwargs):
        subjects = {"train": [str(s) for s in train_subjects],
                    "test": [str(s) for s in test_subjects]}
        if not subjects["train"] and not subjects["test"]:
            raise InputError("zju_mocap: train_subjects and test_subjects are both empty")
        both = set(subjects["train"]) & set(subjects["test"])
        if both:
            raise InputError(f"zju_mocap: subjects {sorted(both)} are in both splits")
        if int(frame_stride) < 1 or int(frame_start) < 0:
            raise InputError(f"zju_mocap: frame_stride must be >= 1 and frame_start >= 0, got "
                             f"{frame_stride}, {frame_start}")
        if max_frames is not None and int(max_frames) < 1:
            raise InputError(f"zju_mocap: max_frames must be >= 1 (or None), got {max_frames}")
        if image_size is None and not float(image_scale) > 0:
            raise InputError(f"zju_mocap: image_scale must be > 0, got {image_scale}")
        if image_size is not None and int(image_size) < 8:
            raise InputError(f"zju_mocap: image_size must be >= 8 (or None), got {image_size}")
        if params_dir is not None and params_dir not in PARAMS_DIRS:
            raise InputError(f"zju_mocap: params_dir must be one of {PARAMS_DIRS}, got "
                             f"{params_dir!r}")
        self._options = {
            "train_subjects": subjects["train"], "test_subjects": subjects["test"],
            "cameras": None if cameras is None else [int(c) for c in cameras],
            "frame_start": int(frame_start), "frame_stride": int(frame_stride),
            "max_frames": None if max_frames is None else int(max_frames),
            "image_scale": None if image_size is not None else float(image_scale),
            "image_size": None if image_size is None else int(image_size),
            "undistort": bool(undistort), "body": expand_path(str(body)),
            "j_regressor_extra": expand_path(j_regressor_extra), "params_dir": params_dir,
            "jpeg_quality": int(jpeg_quality)}
        self._scanned: Optional[tuple] = None
        super().__init__(**kwargs)

    def _sequence(self, subject: str) -> int:
        if subject.isdigit():
            return int(subject)
        ordered = self._options["train_subjects"] + self._options["test_subjects"]
        return ordered.index(subject)

    def check_manual_dir(self, manual_dir) -> dict:
        """Scan every requested subject (module doc): {split: [SubjectFrames]}; the errors name
        the file and the key. Cached for the build that follows."""
        root = os.fspath(manual_dir)
        if self._scanned is not None and self._scanned[0] == root:
            return self._scanned[1]
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset 'zju_mocap': manual_dir {root} does not exist")
        o = self._options
        scans = {}
        for split in ("train", "test"):
            if o[f"{split}_subjects"]:
                scans[split] = [scan_subject(root, s, self._sequence(s), cameras=o["cameras"],
                                             frame_start=o["frame_start"],
                                             frame_stride=o["frame_stride"],
                                             max_frames=o["max_frames"],
                                             params_dir=o["params_dir"])
                                for s in o[f"{split}_subjects"]]
        self._scanned = (root, scans)
        return scans

    def _split_generators(self, dl_manager):
        scans = self.check_manual_dir(os.fspath(dl_manager.manual_dir))
        return {split: self._generate_split(split, subjects) for split, subjects in scans.items()}

    def _body(self):
        import smpl_jax
        kw = {}
        if self._options["j_regressor_extra"]:
            kw["j_regressor_extra"] = self._options["j_regressor_extra"]
        return smpl_jax.load(self._options["body"], **kw)

    def _generate_split(self, split, subjects) -> Iterator:
        import smpl_jax
        from imphmr_jax.data.synthetic.placement import camera_pose_labels
        from imphmr_jax.data.synthetic.records import keypoints_and_box

        body = self._body()
        spin = "vertex21" in body.regressors and "extra9" in body.regressors
        extra = ("spin49",) if spin else ()
        forward = jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))
        counts = Counts(written=0)
        total = sum(len(s.frames) * len(s.cameras) for s in subjects)
        bar = tqdm(total=total, desc=f"{self.name}/{split}", disable=not self._progress,
                   mininterval=1.0)
        for sub in subjects:
            betas = sub.params["shapes"]
            n = betas.shape[0]
            jt, jsd = np.asarray(body.joint_template, np.float64), np.asarray(
                body.joint_shapedirs, np.float64)
            nb = min(jsd.shape[-1], betas.shape[1])
            j0 = jt[0] + np.einsum("cn,fn->fc", jsd[0, :, :nb], betas[:, :nb])
            pose_w, transl_w = world_pose(sub.params["poses"], sub.params["Rh"],
                                          sub.params["Th"], j0)
            joints = []
            for s in range(0, n, _FORWARD_BATCH):
                rows = np.arange(s, s + _FORWARD_BATCH).clip(max=n - 1)  # padded: one program
                out = forward(body, np.asarray(pose_w[rows], np.float32),
                              np.asarray(betas[rows], np.float32), extra_joints=extra,
                              return_vertices=False)
                joints.append(np.asarray(out.joints, np.float64)[: min(_FORWARD_BATCH, n - s)])
            joints_w = np.concatenate(joints) + transl_w[:, None]
            maps = {}
            for f, t in enumerate(sub.frames):
                for c, k in enumerate(sub.cameras):
                    rel = sub.images[f][c]
                    path = os.path.join(sub.folder, rel)
                    _, img = read_image_file(path)
                    rgb = np.asarray(img.convert("RGB"))
                    mask = _read_mask(sub.masks[f][c], rgb.shape[:2])
                    rgb, mask, intr = prepare_view(
                        rgb, mask, sub.K[c], sub.D[c], undistort=self._options["undistort"],
                        image_scale=self._options["image_scale"],
                        image_size=self._options["image_size"], cache=maps, cache_key=c)
                    size = (rgb.shape[1], rgb.shape[0])
                    rot, trans = sub.R[c], sub.T[c]
                    pose_cam, cam_t = camera_pose_labels(rot[None], trans[None], pose_w[f][None],
                                                         transl_w[f][None], j0[f][None])
                    joints_cam = joints_w[f] @ rot.T + trans
                    if spin:
                        kp, center, scale = keypoints_and_box(joints_cam, intr, mask,
                                                              (size[1], size[0]))
                        gt = joints_cam[24:73][schema.NUM_OPENPOSE:]
                        j3d = np.concatenate([gt, np.ones((schema.NUM_GT_JOINTS, 1))], 1)
                    else:
                        kp = np.zeros((schema.NUM_KEYPOINTS, 3))
                        j3d = np.zeros((schema.NUM_GT_JOINTS, 4))
                        rows_, cols_ = np.nonzero(mask)
                        if rows_.size:
                            x0, x1 = cols_.min(), cols_.max() + 1.0
                            y0, y1 = rows_.min(), rows_.max() + 1.0
                        else:
                            x0, x1, y0, y1 = 0.0, float(size[0]), 0.0, float(size[1])
                        center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
                        scale = 1.2 * max(x1 - x0, y1 - y0) / 200.0
                    rec = schema.empty_record(
                        image=encode_jpeg(Image.fromarray(rgb), self._options["jpeg_quality"]),
                        imgname=f"CoreView_{sub.subject}/{rel}", center=center, scale=scale,
                        keypoints_2d=kp, joints_3d=j3d, pose=pose_cam.reshape(-1),
                        betas=betas[f], has_smpl=1, has_pose_3d=int(spin),
                        mask=encode_mask(mask), has_mask=1, intrinsics=intr, cam_t=cam_t[0],
                        has_camera=1, sequence=sub.sequence, frame=t, view=k,
                        extrinsics=np.concatenate([rot, trans[:, None]], 1),
                        pose_world=pose_w[f].reshape(-1), transl_world=transl_w[f])
                    schema.validate_record(rec, variant=True)
                    counts.add("written")
                    bar.update(1)
                    yield f"{sub.subject}/{t:06d}/{k:02d}", rec
            counts.add(f"subject_{sub.subject}", len(sub.frames) * len(sub.cameras))
        bar.close()
        counts.add("has_smpl", counts["written"])
        counts.add("has_pose_3d", counts["written"] if spin else 0)
        self._finish_split(split, counts)


# ---------------------------------------------------------------------------------- command line
def _int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    """``python -m imphmr_jax.data.builders.zju_mocap --root DIR --data_dir DIR [options]``."""
    p = argparse.ArgumentParser(prog="python -m imphmr_jax.data.builders.zju_mocap",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder with the CoreView_<subject> folders")
    p.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
    p.add_argument("--train_subjects", type=_str_list, default=None, help="e.g. 313,315,377")
    p.add_argument("--test_subjects", type=_str_list, default=None, help="e.g. 387,393,394")
    p.add_argument("--cameras", type=_int_list, default=None, help="0-based, e.g. 0,6,12,18")
    p.add_argument("--frame_start", type=int, default=0)
    p.add_argument("--frame_stride", type=int, default=1)
    p.add_argument("--max_frames", type=int, default=None)
    p.add_argument("--image_scale", type=float, default=0.5)
    p.add_argument("--image_size", type=int, default=None, help="longer side; overrides scale")
    p.add_argument("--no_undistort", action="store_true")
    p.add_argument("--body", default="default", help="smpl_jax body (the fits' SMPL file)")
    p.add_argument("--j_regressor_extra", default=None)
    p.add_argument("--params_dir", default=None, choices=PARAMS_DIRS)
    p.add_argument("--jpeg_quality", type=int, default=95)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS's chatter; its errors still show
    from imphmr_jax.data import builders

    opts = {k: getattr(a, k) for k in ("cameras", "frame_start", "frame_stride", "max_frames",
                                       "image_scale", "image_size", "body", "j_regressor_extra",
                                       "params_dir", "jpeg_quality")}
    for key in ("train_subjects", "test_subjects"):
        if getattr(a, key) is not None:
            opts[key] = getattr(a, key)
    builder = builders.build("zju_mocap", a.data_dir, manual_dir=a.root, overwrite=a.overwrite,
                             progress=not a.no_progress, undistort=not a.no_undistort, **opts)
    print(f"built {builder.data_dir}: {dict(builder.info.metadata or {}).get('counts')}")
    return 0

