"""The one record layout every dataset is stored in, and the batch layout the pipeline produces.

Stored record (one example of any builder, real or synthetic; all coordinates refer to the STORED
image, which is the original image or, when a builder pre-crops, the crop it stored):

    image         bytes        encoded JPEG or PNG (decoded with Pillow; no TensorFlow)
    imgname       bytes        the annotation file's image path (utf-8), for bookkeeping
    center        (2,)  f32    box centre, pixels (x, y)
    scale         ()    f32    box side / 200 (SPIN's convention)
    keypoints_2d  (49, 3) f32  SPIN's 49 joints (25 OpenPose, then 24 GT): x, y pixels, confidence
    joints_3d     (24, 4) f32  SPIN's 24 GT joints, metres, camera frame (root-centring is the
                               pipeline's business, not the record's), then confidence
    pose          (72,) f32    SMPL axis-angle, global orientation in the CAMERA frame
    betas         (10,) f32
    has_smpl      ()    i32    0/1
    has_pose_3d   ()    i32    0/1
    gender        ()    i32    -1 unknown/neutral, 0 male, 1 female (docs/datasets.md#npz-keys)
    mask          bytes        encoded single-channel PNG of the person's silhouette, b"" if none
    has_mask      ()    i32
    intrinsics    (4,)  f32    [fx, fy, cx, cy] of the stored image (pixel centres at +0.5), zeros
                               if unknown
    cam_t         (3,)  f32    SMPL translation in the camera frame: camera-frame vertices =
                               smpl_jax.forward(body, pose, betas).vertices + cam_t; zeros if unknown
    has_camera    ()    i32

Variant records (synthetic multiview / video / multiview_video, zju_mocap) add:
    sequence      ()    i32    person (multiview, multiview_video; zju_mocap: the subject number,
                               e.g. 313) or clip (video) id
    frame         ()    i32    frame index within the clip (0 for multiview)
    view          ()    i32    camera index (0 for video)
    extrinsics    (3, 4) f32   world -> camera [R | t]
    pose_world    (72,) f32    SMPL pose with the global orientation in the WORLD frame
    transl_world  (3,)  f32    SMPL translation in the world frame

Pipeline batch (`imphmr_jax.data.pipeline`, what `losses` and training consume), B samples:
    image         (B, H, W, 3) f32, ImageNet-normalised RGB of the crop
    keypoints_2d  (B, 49, 3)  x, y in [-1, 1] crop coordinates, confidence
    joints_3d     (B, 24, 4)  metres, camera frame (augmentation applied)
    pose          (B, 72)     global orientation in the (augmented) camera frame
    betas         (B, 10)
    has_smpl, has_pose_3d (B,) f32
    gender        (B,) i32
    dataset       (B,) i32    index of the source in the mixture
"""
from __future__ import annotations

import numpy as np

# keypoints_2d / joints_3d hold SPIN's joint sets, defined with the other body-model joint sets.
from smpl_jax.joint_sets import NUM_GT_JOINTS, NUM_OPENPOSE, NUM_SPIN49 as NUM_KEYPOINTS

NUM_POSE = 72
NUM_BETAS = 10

GENDER_UNKNOWN, GENDER_MALE, GENDER_FEMALE = -1, 0, 1

IMG_NORM_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMG_NORM_STD = np.array([0.229, 0.224, 0.225], np.float32)

# name -> (shape, numpy dtype); shape None = a bytes scalar.
RECORD_FIELDS: dict[str, tuple] = {
    "image": (None, np.object_),
    "imgname": (None, np.object_),
    "center": ((2,), np.float32),
    "scale": ((), np.float32),
    "keypoints_2d": ((NUM_KEYPOINTS, 3), np.float32),
    "joints_3d": ((NUM_GT_JOINTS, 4), np.float32),
    "pose": ((NUM_POSE,), np.float32),
    "betas": ((NUM_BETAS,), np.float32),
    "has_smpl": ((), np.int32),
    "has_pose_3d": ((), np.int32),
    "gender": ((), np.int32),
    "mask": (None, np.object_),
    "has_mask": ((), np.int32),
    "intrinsics": ((4,), np.float32),
    "cam_t": ((3,), np.float32),
    "has_camera": ((), np.int32),
}

VARIANT_FIELDS: dict[str, tuple] = {
    "sequence": ((), np.int32),
    "frame": ((), np.int32),
    "view": ((), np.int32),
    "extrinsics": ((3, 4), np.float32),
    "pose_world": ((NUM_POSE,), np.float32),
    "transl_world": ((3,), np.float32),
}


def empty_record(**values) -> dict:
    """A record with the npz defaults of docs/datasets.md#npz-keys (zeros, flags 0, gender -1, no
    mask), updated by `values`."""
    rec = {}
    for name, (shape, dtype) in RECORD_FIELDS.items():
        rec[name] = b"" if shape is None else np.zeros(shape, dtype)
    rec["gender"] = np.int32(GENDER_UNKNOWN)
    unknown = set(values) - set(RECORD_FIELDS) - set(VARIANT_FIELDS)
    if unknown:
        raise KeyError(f"unknown record fields {sorted(unknown)}; known: "
                       f"{sorted(RECORD_FIELDS) + sorted(VARIANT_FIELDS)}")
    for name, value in values.items():
        rec[name] = coerce(name, value)
    return rec


def coerce(name: str, value):
    """`value` as field `name`'s dtype and shape; a wrong shape is a ValueError naming the field."""
    shape, dtype = {**RECORD_FIELDS, **VARIANT_FIELDS}[name]
    if shape is None:
        if isinstance(value, str):
            return value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"record field {name!r} must be bytes, got {type(value).__name__}")
        return bytes(value)
    arr = np.asarray(value, dtype)
    if arr.shape != shape:
        raise ValueError(f"record field {name!r} must have shape {shape}, got {arr.shape}")
    return arr


def validate_record(rec: dict, variant: bool = False) -> None:
    """Raise if a field is missing or has the wrong shape/dtype (used by builders and tests)."""
    fields = {**RECORD_FIELDS, **(VARIANT_FIELDS if variant else {})}
    missing = set(fields) - set(rec)
    if missing:
        raise KeyError(f"record is missing fields {sorted(missing)}")
    for name, (shape, dtype) in fields.items():
        v = rec[name]
        if shape is None:
            if not isinstance(v, bytes):
                raise TypeError(f"record field {name!r} must be bytes, got {type(v).__name__}")
        else:
            a = np.asarray(v)
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"record field {name!r} must be {np.dtype(dtype).name}{shape}, "
                                 f"got {a.dtype.name}{a.shape}")
