"""Rendered samples -> records in :mod:`imphmr_jax.data.schema`'s layout: image and mask codecs,
SPIN keypoints and box from the camera-frame joints, the record (and its 2D-only form)."""
from __future__ import annotations

import io
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from imphmr_jax.data import schema
from imphmr_jax.data.synthetic.config import SyntheticConfig
from imphmr_jax.geometry import camera
from smpl_jax import joint_sets

# Labels a 2D-only record loses (zeroed), and its flags cleared.
_3D_FIELDS = ("joints_3d", "pose", "betas", "cam_t", "intrinsics")
_3D_FLAGS = ("has_smpl", "has_pose_3d", "has_camera")


class Labels(NamedTuple):
    """Camera-frame labels of one sample: joints_cam (73, 3) = forward(..., extra_joints=
    ('spin49',)).joints + cam_t, metres; intrinsics (4,) [f, f, c, c] pixels; pose (24, 3)
    axis-angle with the camera-frame global orientation; betas (10,); cam_t (3,) metres."""

    joints_cam: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray


class Variant(NamedTuple):
    """schema.VARIANT_FIELDS of a multi-view / video record: sequence (person or clip), frame,
    view, extrinsics (3, 4) world -> camera [R | t], pose_world (72,), transl_world (3,)."""

    sequence: int
    frame: int
    view: int
    extrinsics: np.ndarray
    pose_world: np.ndarray
    transl_world: np.ndarray


def encode_image(image: np.ndarray, config: SyntheticConfig) -> bytes:
    """(H, W, 3) uint8 -> JPEG (config.jpeg_quality) or PNG bytes."""
    buf = io.BytesIO()
    if config.image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=int(config.jpeg_quality))
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) bool -> single-channel PNG, 255 on the person."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """Inverse of encode_mask: PNG bytes -> (H, W) bool."""
    return np.asarray(Image.open(io.BytesIO(data))) > 127


def keypoints_and_box(joints_cam, intrinsics, mask, size):
    """SPIN-49 keypoints (49, 3) and the SPIN box (center (2,), scale) of one sample.

    keypoints: the projection of the camera-frame SPIN joints (73-joint forward output rows
    24:73), confidence 1 where in front of the camera and inside the image, else 0.
    Box: the union of the silhouette's pixel bbox and the confident keypoints, centre in pixels,
    scale = 1.2 * max side / 200 (SPIN); the whole image if neither exists.
    size: the side of a square image, or (height, width), pixels.
    """
    height, width = (size, size) if np.ndim(size) == 0 else (size[0], size[1])
    spin = np.asarray(joints_cam, np.float64)[joint_sets.SPIN49_SLICE]
    uv, z = camera.project(spin[None], np.asarray(intrinsics, np.float64)[None])  # numpy float64
    uv, z = uv[0], z[0]
    inside = ((z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0)
              & (uv[:, 1] < height))
    kp = np.concatenate([uv, inside[:, None].astype(np.float64)], 1).astype(np.float32)
    xs, ys = list(uv[inside, 0]), list(uv[inside, 1])
    rows, cols = np.nonzero(mask)
    if rows.size:
        xs += [cols.min(), cols.max() + 1.0]
        ys += [rows.min(), rows.max() + 1.0]
    if not xs:
        xs, ys = [0.0, float(width)], [0.0, float(height)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
    scale = np.float32(1.2 * max(x1 - x0, y1 - y0) / 200.0)
    return kp, center, scale


def make_record(config: SyntheticConfig, image, mask, labels: Labels, imgname: str, *,
                two_d_only: bool = False, variant: Optional[Variant] = None) -> dict:
    """The schema record of one rendered sample: (S, S, 3) uint8 image, (S, S) bool mask and its
    labels; keypoints_2d and the box from :func:`keypoints_and_box`, joints_3d = SPIN's 24 GT
    joints (confidence 1). A 2D-only record keeps the image, keypoints, box and mask only."""
    size = config.image_size
    kp, center, scale = keypoints_and_box(labels.joints_cam, labels.intrinsics, mask, size)
    gt = labels.joints_cam[joint_sets.SPIN49_SLICE][schema.NUM_OPENPOSE:]
    j3d = np.concatenate([gt, np.ones((schema.NUM_GT_JOINTS, 1))], 1)
    rec = schema.empty_record(
        image=encode_image(image, config), imgname=imgname, center=center, scale=scale,
        keypoints_2d=kp, joints_3d=j3d, pose=np.asarray(labels.pose).reshape(-1),
        betas=labels.betas, has_smpl=1, has_pose_3d=1, mask=encode_mask(mask), has_mask=1,
        intrinsics=labels.intrinsics, cam_t=labels.cam_t, has_camera=1,
        **(variant._asdict() if variant is not None else {}))
    if two_d_only:
        for name in _3D_FIELDS:
            rec[name] = np.zeros_like(rec[name])
        for name in _3D_FLAGS:
            rec[name] = np.int32(0)
        for name in ("pose_world", "transl_world"):
            if name in rec:
                rec[name] = np.zeros_like(rec[name])
    return rec


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar counting records (disabled unless ``enabled``)."""
    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")
