"""Crops, SPIN's training augmentation and the matching label transforms (numpy + Pillow, host side).

Coordinate conventions (the same as `imphmr_jax.geometry.camera`):
  * Image coordinates are continuous pixels: an image of width W and height H spans [0, W] x [0, H],
    and the pixel in row i, column j has its centre at (u, v) = (j + 0.5, i + 0.5). Record
    keypoints (`keypoints_2d[:, :2]`) and record intrinsics use this convention, so the exact
    pinhole projection of `joints_3d` through `intrinsics` lands on the keypoints.
  * A crop is described by a 2x3 affine `A` mapping source coordinates to crop coordinates
    (`crop = A[:, :2] @ src + A[:, 2]`), both continuous. The box of side h = 200·scale centred at
    `center` maps onto [0, res]², optionally rotated by `rot_deg` about the box centre.
  * Crop keypoints are returned normalised, `2·u/res - 1`, so -1 and +1 are the crop's outer
    edges (the left/top edge of the first pixel and the right/bottom edge of the last).
  * A positive rotation turns the image content counter-clockwise on screen (SPIN's sign).
    In camera axes (x right, y down, z forward) the same rotation of the crop is the 3D rotation
    about the optical axis R = R_z(-rot) (i.e. [[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]), applied
    to the camera-frame joints and to the SMPL global orientation (R_go' = R·R_go). Then, with a
    source camera K = [f, f, cx, cy], the crop camera is K' = [s·f, s·f, c'] with s = res/h and
    c' = A(c) the crop position of the principal point (see `crop_camera`), and K'(R·X) = A(K(X))
    exactly.
  * Horizontal flip mirrors the crop about its vertical centre line: normalised x -> -x with the
    left/right joint permutations; 3D joints x -> -x; axis-angle (wx, wy, wz) -> (wx, -wy, -wz)
    with the SMPL joint permutation (a reflection of the body through the camera's y-z plane).

Differences from SPIN (utils/imutils.py): SPIN rounds the crop corners to integer pixels, rotates
by padding + rotating + un-padding and resamples twice (rotate, then resize), and its `transform`
quantises keypoints to integer pixels. Here the image is warped once by the exact affine (bilinear,
zero outside the source) and keypoints are mapped by the SAME affine without quantisation, so the
image content and the labels agree to sub-pixel accuracy.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Optional

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from imphmr_jax.data import schema
from smpl_jax import joint_sets

BOX_UNIT = 200.0  # SPIN: scale = box side / 200 pixels


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """SPIN's augmentation parameters (utils/train_options.py, datasets/base_dataset.py).

    Fields:
      flip_prob: probability of a horizontal flip.
      noise_factor: per-channel multiplicative colour noise ~ U[1 - f, 1 + f] (pixels clipped to
        [0, 255]).
      rot_factor: rotation std in degrees; rot ~ clip(N(0, rot_factor²), ±2·rot_factor).
      rot_zero_prob: probability that the rotation is set to 0.
      scale_factor: box scale multiplier ~ clip(N(1, scale_factor²), 1 ± scale_factor).
      occlusion_prob: probability of pasting one synthetic occluder patch (off by default; PARE's
        synthetic occlusion uses real object crops, this uses a random-colour textured rectangle).
      occlusion_size: occluder side range as fractions of the crop side.
      motion_blur_prob: probability of a linear motion blur (off by default; PARE uses
        albumentations.MotionBlur(p=0.5)).
      motion_blur_max_len: maximum blur length in crop pixels (odd lengths 3..max).
    """
    flip_prob: float = 0.5
    noise_factor: float = 0.4
    rot_factor: float = 30.0
    rot_zero_prob: float = 0.6
    scale_factor: float = 0.25
    occlusion_prob: float = 0.0
    occlusion_size: tuple = (0.1, 0.4)
    motion_blur_prob: float = 0.0
    motion_blur_max_len: int = 9


@dataclasses.dataclass(frozen=True)
class AugParams:
    """One sample's augmentation: flip (bool), pn (3,) channel gains, rot (deg), sc (box scale
    multiplier), plus the extras' parameters (None when not applied)."""
    flip: bool = False
    pn: tuple = (1.0, 1.0, 1.0)
    rot: float = 0.0
    sc: float = 1.0
    occluder: Optional[tuple] = None  # (x0, y0, w, h, r, g, b, texture_seed) in crop pixels
    blur: Optional[tuple] = None  # (length, angle_deg)


def sample_aug_params(config: AugmentConfig, rng: np.random.Generator, res: int) -> AugParams:
    """Draws SPIN's augmentation parameters (`augm_params`) from `rng`; always consumes the same
    number of draws so that the parameters of one kind do not depend on the others' flags."""
    u = rng.uniform(size=8)
    flip = bool(u[0] < config.flip_prob)
    pn = tuple(float(x) for x in rng.uniform(1 - config.noise_factor, 1 + config.noise_factor, 3))
    rot = float(np.clip(rng.normal() * config.rot_factor,
                        -2 * config.rot_factor, 2 * config.rot_factor))
    if u[1] <= config.rot_zero_prob:
        rot = 0.0
    sc = float(np.clip(rng.normal() * config.scale_factor + 1,
                       1 - config.scale_factor, 1 + config.scale_factor))
    occ = rng.uniform(size=7)
    occluder = None
    if u[2] < config.occlusion_prob:
        lo, hi = config.occlusion_size
        w = max(1, int(round(res * (lo + (hi - lo) * occ[0]))))
        h = max(1, int(round(res * (lo + (hi - lo) * occ[1]))))
        x0 = int(occ[2] * (res - w + 1))
        y0 = int(occ[3] * (res - h + 1))
        occluder = (x0, y0, w, h, int(255 * occ[4]), int(255 * occ[5]), int(255 * occ[6]),
                    int(rng.integers(2**31)))
    else:
        rng.integers(2**31)
    blur = None
    if u[3] < config.motion_blur_prob and config.motion_blur_max_len >= 3:
        lengths = np.arange(3, config.motion_blur_max_len + 1, 2)
        blur = (int(lengths[int(u[4] * len(lengths))]), float(360.0 * u[5]))
    return AugParams(flip=flip, pn=pn, rot=rot, sc=sc, occluder=occluder, blur=blur)


# ------------------------------------------------------------------------------------------ crops
def crop_transform(center, scale, res: int, rot_deg: float = 0.0) -> np.ndarray:
    """2x3 affine (float64) mapping continuous source pixels to continuous crop pixels.

    The box of side h = 200·scale centred at `center` (x, y) maps onto [0, res]²: the box centre goes
    to (res/2, res/2), lengths scale by res/h, and the content is rotated by `rot_deg` degrees
    counter-clockwise on screen about the box centre (y points down, so the linear part is
    (res/h)·[[cos, sin], [-sin, cos]]).
    """
    center = np.asarray(center, np.float64).reshape(2)
    scale = float(scale)
    if not np.all(np.isfinite(center)) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"crop_transform needs a finite center and scale > 0, got center={center}, "
                         f"scale={scale}")
    s = res / (BOX_UNIT * scale)
    t = np.deg2rad(rot_deg)
    lin = s * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    offset = np.array([res / 2.0, res / 2.0]) - lin @ center
    return np.concatenate([lin, offset[:, None]], axis=1)


def apply_affine(affine, points) -> np.ndarray:
    """(..., 2) points through a 2x3 affine (no rounding)."""
    affine = np.asarray(affine, np.float64)
    points = np.asarray(points, np.float64)
    return points @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    affine = np.asarray(affine, np.float64)
    inv = np.linalg.inv(affine[:, :2])
    return np.concatenate([inv, (-inv @ affine[:, 2])[:, None]], axis=1)


def crop_image(image_uint8: np.ndarray, affine, res: int) -> np.ndarray:
    """Warps an (H, W, 3) or (H, W) uint8 image by `affine` into a res×res crop in one bilinear
    resampling; crop pixels whose source lies outside the image are 0.

    Pillow's AFFINE transform samples the source at inverse(affine)·(crop pixel centre) with pixel
    centres at +0.5, the same convention as the keypoints, so content and labels agree exactly.
    Strong downscaling is not low-pass filtered (as bilinear resizes in SPIN/PARE are not either,
    beyond their implicit antialiasing); `decode_image` can pre-shrink JPEGs by 2/4/8 at decode time.
    """
    arr = np.asarray(image_uint8)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"crop_image expects an (H, W[, C]) uint8 image, got {arr.dtype}{arr.shape}")
    img = Image.fromarray(arr)
    inv = invert_affine(affine)
    out = img.transform((res, res), Image.Transform.AFFINE, data=tuple(inv.reshape(-1)),
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(out)


def crop_camera(intrinsics, affine) -> tuple[np.ndarray, np.ndarray]:
    """The crop's pinhole camera for a source camera `intrinsics` [fx, fy, cx, cy] (fx = fy needed
    when the affine rotates): returns (crop intrinsics [s·fx, s·fy, cx', cy'], R (3, 3)) such that
    projecting R·X with the crop intrinsics equals `affine` applied to the source projection of X.
    R is the rotation about the optical axis equal to the affine's rotation (R_z(-rot))."""
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    lin = np.asarray(affine, np.float64)[:, :2]
    s = np.sqrt(abs(np.linalg.det(lin)))
    rot2 = lin / s
    c_new = apply_affine(affine, [cx, cy])
    R = np.eye(3)
    R[:2, :2] = rot2
    return np.array([s * fx, s * fy, c_new[0], c_new[1]]), R


def rot_z(rot_deg: float) -> np.ndarray:
    """(3, 3) camera-frame rotation matching a crop rotated by rot_deg (R_z(-rot) in SPIN's words):
    [[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]."""
    t = np.deg2rad(rot_deg)
    return np.array([[np.cos(t), np.sin(t), 0.0], [-np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------ label maps
def keypoints_to_crop(keypoints_2d, affine, res: int) -> np.ndarray:
    """(J, 3) source keypoints [x, y, conf] (pixels) -> [x, y, conf] with x, y normalised to [-1, 1]
    over the crop (2·u/res - 1). Keypoints outside the crop keep their (out-of-range) coordinates
    and their confidence, as in SPIN."""
    kp = np.asarray(keypoints_2d, np.float64)
    out = kp.copy()
    out[:, :2] = 2.0 * apply_affine(affine, kp[:, :2]) / res - 1.0
    return out.astype(np.float32)


def rotate_joints_3d(joints_3d, rot_deg: float) -> np.ndarray:
    """(J, 4) camera-frame joints [x, y, z, conf] rotated with the crop (R_z(-rot)·X); conf kept."""
    j = np.asarray(joints_3d, np.float64).copy()
    j[:, :3] = j[:, :3] @ rot_z(rot_deg).T
    return j.astype(np.float32)


def rotate_pose(pose, rot_deg: float) -> np.ndarray:
    """(72,) SMPL axis-angle with its global orientation pre-multiplied by R_z(-rot)."""
    p = np.asarray(pose, np.float64).copy()
    if rot_deg != 0.0:
        r = Rotation.from_matrix(rot_z(rot_deg)) * Rotation.from_rotvec(p[:3])
        p[:3] = r.as_rotvec()
    return p.astype(np.float32)


def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an (H, W[, C]) image left-right."""
    return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def flip_keypoints_2d(keypoints_2d) -> np.ndarray:
    """(49, 3) crop keypoints in normalised [-1, 1] coordinates: J49 flip permutation, x -> -x."""
    kp = np.asarray(keypoints_2d)
    if kp.shape != (schema.NUM_KEYPOINTS, 3):
        raise ValueError(f"flip_keypoints_2d expects (49, 3) keypoints, got {kp.shape}")
    out = kp[np.asarray(joint_sets.J49_FLIP_PERM)].copy()
    out[:, 0] = -out[:, 0]
    return out


def flip_joints_3d(joints_3d) -> np.ndarray:
    """(24, 4) camera-frame joints: J24 flip permutation, x -> -x (mirror through the y-z plane)."""
    j = np.asarray(joints_3d)
    if j.shape != (schema.NUM_GT_JOINTS, 4):
        raise ValueError(f"flip_joints_3d expects (24, 4) joints, got {j.shape}")
    out = j[np.asarray(joint_sets.J24_FLIP_PERM)].copy()
    out[:, 0] = -out[:, 0]
    return out


def flip_pose(pose) -> np.ndarray:
    """(72,) SMPL axis-angle: SMPL flip permutation, then (wx, wy, wz) -> (wx, -wy, -wz) per joint
    (the rotation mirrored through the y-z plane: F·R·F with F = diag(-1, 1, 1))."""
    p = np.asarray(pose)
    if p.shape != (schema.NUM_POSE,):
        raise ValueError(f"flip_pose expects a (72,) pose, got {p.shape}")
    out = p[np.asarray(joint_sets.SMPL_POSE_FLIP_PERM)].copy()
    out[1::3] = -out[1::3]
    out[2::3] = -out[2::3]
    return out


# ---------------------------------------------------------------------------------- photometrics
def channel_noise(image_uint8: np.ndarray, pn) -> np.ndarray:
    """SPIN's per-channel multiplicative noise: float32 pixels·pn clipped to [0, 255]."""
    x = np.asarray(image_uint8).astype(np.float32)
    x *= np.asarray(pn, np.float32)
    return np.clip(x, 0.0, 255.0, out=x)


_NORM_GAIN = (1.0 / (255.0 * schema.IMG_NORM_STD)).astype(np.float32)
_NORM_BIAS = (schema.IMG_NORM_MEAN / schema.IMG_NORM_STD).astype(np.float32)


def normalize_image(image_0_255: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """[0, 255] RGB -> ImageNet-normalised float32 ((x/255 - mean)/std). inplace=True reuses a
    float32 input's memory."""
    x = np.asarray(image_0_255)
    x = x if (inplace and x.dtype == np.float32) else x.astype(np.float32)
    x *= _NORM_GAIN
    x -= _NORM_BIAS
    return x


def paste_occluder(image: np.ndarray, occluder: tuple) -> np.ndarray:
    """Pastes a textured rectangle (x0, y0, w, h, r, g, b, texture_seed) into a float image."""
    x0, y0, w, h, r, g, b, tseed = occluder
    out = np.array(image, np.float32, copy=True)
    texture = np.random.default_rng(tseed).uniform(0.7, 1.3, size=(h, w, 1)).astype(np.float32)
    patch = np.clip(np.array([r, g, b], np.float32) * texture, 0, 255)
    out[y0:y0 + h, x0:x0 + w] = patch[:out.shape[0] - y0, :out.shape[1] - x0]
    return out


def motion_blur(image: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Linear motion blur: the mean of `length` copies shifted along a line at `angle_deg`
    (integer shifts, edge pixels repeated), like a normalised line kernel."""
    img = np.asarray(image, np.float32)
    h, w = img.shape[:2]
    t = np.deg2rad(angle_deg)
    offs = np.arange(length) - (length - 1) / 2.0
    pad = (length + 1) // 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros_like(img)
    for o in offs:
        dx, dy = int(round(o * np.cos(t))), int(round(o * np.sin(t)))
        acc += padded[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return acc / length


# ------------------------------------------------------------------------------------ one sample
def decode_image(data: bytes, *, shrink: int = 1, name: str = "image") -> tuple[np.ndarray, int]:
    """Encoded JPEG/PNG bytes -> ((H', W', 3) uint8 RGB, k). For JPEGs and shrink >= 2 the decoder
    scales by 1/k with k the largest of 2, 4, 8 not above `shrink` (libjpeg DCT scaling, cheap);
    continuous coordinates then divide by k exactly. Other formats and images under 64 px: k = 1."""
    if not data:
        raise ValueError(f"record field {name!r} is empty (no encoded image)")
    try:
        img = Image.open(io.BytesIO(data))
        k = 1
        if shrink >= 2 and img.format == "JPEG" and min(img.size) >= 64:
            k = 8 if shrink >= 8 else 4 if shrink >= 4 else 2
            w, h = img.size
            img.draft("RGB", (-(-w // k), -(-h // k)))
            # libjpeg's scaled size is ceil(size / k'); recover k' (exact: coordinates / k')
            k = next((c for c in (8, 4, 2) if img.size == (-(-w // c), -(-h // c))), 1)
            if img.size != (-(-w // k), -(-h // k)):
                raise ValueError(f"unexpected JPEG draft size {img.size} for {(w, h)}")
        arr = np.asarray(img.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - re-raised with the field name
        raise ValueError(f"could not decode record field {name!r} ({len(data)} bytes): {e}") from e
    return arr, k


def process_record(record: dict, config: AugmentConfig = AugmentConfig(),
                   rng: Optional[np.random.Generator] = None, train: bool = True, *,
                   res: int = 224, shrink_jpeg: bool = True) -> dict:
    """One stored record (schema.RECORD_FIELDS) -> one sample in the pipeline batch layout (no batch
    dim): image (res, res, 3) f32 ImageNet-normalised, keypoints_2d (49, 3) normalised crop coords,
    joints_3d (24, 4) camera frame after rotation/flip, pose (72,), betas (10,), has_smpl and
    has_pose_3d f32, gender i32.

    train=True samples SPIN's augmentation from `rng` (required); train=False crops at the stored
    box with no augmentation. With shrink_jpeg, a JPEG whose box is downscaled by >= 2 is decoded at
    1/2, 1/4 or 1/8 size (labels unaffected: the affine accounts for it).
    """
    for f in ("image", "center", "scale", "keypoints_2d", "joints_3d", "pose", "betas"):
        if f not in record:
            raise KeyError(f"record is missing field {f!r} (schema.RECORD_FIELDS)")
    if train and rng is None:
        raise ValueError("process_record(train=True) needs an np.random.Generator")
    params = sample_aug_params(config, rng, res) if train else AugParams()
    center = np.asarray(record["center"], np.float64)
    scale = float(np.asarray(record["scale"])) * params.sc
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"record field 'scale' must be > 0, got {record['scale']!r}")
    affine = crop_transform(center, scale, res, params.rot)
    zoom = res / (BOX_UNIT * scale)
    image, k = decode_image(bytes(record["image"]),
                            shrink=int(1.0 / zoom) if shrink_jpeg else 1)
    img_affine = affine.copy()
    if k != 1:  # decoded image coordinates are source coordinates / k
        img_affine[:, :2] *= k
    if params.flip:  # mirror folded into the warp (u -> res - u): one resampling, no extra pass
        img_affine = np.array([[-1.0, 0.0, res], [0.0, 1.0, 0.0]]) @ np.vstack(
            [img_affine, [0.0, 0.0, 1.0]])
    crop = crop_image(image, img_affine, res)
    crop = channel_noise(crop, params.pn)
    if params.occluder is not None:
        crop = paste_occluder(crop, params.occluder)
    if params.blur is not None:
        crop = motion_blur(crop, *params.blur)

    kp = keypoints_to_crop(record["keypoints_2d"], affine, res)
    joints = rotate_joints_3d(record["joints_3d"], params.rot)
    pose = rotate_pose(record["pose"], params.rot)
    if params.flip:
        kp, joints, pose = flip_keypoints_2d(kp), flip_joints_3d(joints), flip_pose(pose)
    return {
        "image": normalize_image(crop, inplace=True),
        "keypoints_2d": kp.astype(np.float32),
        "joints_3d": joints.astype(np.float32),
        "pose": pose.astype(np.float32),
        "betas": np.asarray(record["betas"], np.float32),
        "has_smpl": np.float32(np.asarray(record.get("has_smpl", 0))),
        "has_pose_3d": np.float32(np.asarray(record.get("has_pose_3d", 0))),
        "gender": np.int32(np.asarray(record.get("gender", schema.GENDER_UNKNOWN))),
    }
