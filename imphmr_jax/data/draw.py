"""Drawing SPIN's 49 keypoints, their skeleton and boxes on images with Pillow (for figures).

Coordinates are continuous image coordinates in pixels as everywhere in the project: the image
spans [0, W] x [0, H] and pixel (row i, col j) has its centre at (j + 0.5, i + 0.5). Keypoints are
(49, 3) arrays [x, y, confidence] in SPIN's order (25 OpenPose, then 24 ground-truth joints, see
``smpl_jax.joint_sets.SPIN49_NAMES``); only joints with confidence > 0 are drawn.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Edges among SPIN's 24 ground-truth joints (indices 0..23 of keypoints[25:]):
# 0 RAnkle 1 RKnee 2 RHip 3 LHip 4 LKnee 5 LAnkle 6 RWrist 7 RElbow 8 RShoulder 9 LShoulder
# 10 LElbow 11 LWrist 12 Neck(LSP) 13 TopHead 14 Pelvis 15 Thorax 16 Spine 17 Jaw 18 Head(H36M)
# 19 Nose 20 LEye 21 REye 22 LEar 23 REar.
GT24_EDGES = (
    (0, 1), (1, 2), (2, 14), (14, 3), (3, 4), (4, 5),            # legs
    (6, 7), (7, 8), (8, 15), (15, 9), (9, 10), (10, 11),         # arms
    (14, 16), (16, 15), (15, 12), (12, 17), (17, 18), (18, 13),  # trunk and head
    (19, 20), (19, 21), (20, 22), (21, 23),                      # face
)
# Edges among the 25 OpenPose joints (BODY_25 layout).
OPENPOSE25_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
    (8, 12), (12, 13), (13, 14), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19), (19, 20),
    (14, 21), (11, 22), (22, 23), (11, 24),
)
_GT_RIGHT = {0, 1, 2, 6, 7, 8, 21, 23}
_GT_LEFT = {3, 4, 5, 9, 10, 11, 20, 22}
RIGHT_COLOR = (235, 60, 50)
LEFT_COLOR = (40, 120, 255)
CENTRE_COLOR = (40, 210, 90)
OPENPOSE_COLOR = (255, 230, 40)
BOX_COLOR = (255, 255, 255)


def _side_color(a: int, b: int):
    if a in _GT_RIGHT or b in _GT_RIGHT:
        return RIGHT_COLOR
    if a in _GT_LEFT or b in _GT_LEFT:
        return LEFT_COLOR
    return CENTRE_COLOR


def _to_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return image


def draw_keypoints(image, keypoints, *, box=None, radius: float = 1.5, width: int = 1,
                   openpose: bool = True) -> np.ndarray:
    """Draw SPIN-49 keypoints and skeleton (and optionally a square box) on a copy of ``image``.

    Args:
      image: (H, W, 3) uint8, or float in [0, 1].
      keypoints: (49, 3) [x, y, conf] in pixels of ``image``; (24, 3) is taken as the GT joints.
      box: optional (center (2,), scale) in SPIN's convention: a square of side 200·scale pixels.
      radius: joint dot radius in pixels; width: line width in pixels.
      openpose: also draw the 25 OpenPose joints (small yellow dots and thin lines).
    Returns:
      (H, W, 3) uint8 image with the drawing.
    """
    kp = np.asarray(keypoints, np.float64)
    if kp.ndim != 2 or kp.shape[1] != 3 or kp.shape[0] not in (24, 49):
        raise ValueError(f"keypoints must be (49, 3) or (24, 3) [x, y, conf], got {kp.shape}")
    img = Image.fromarray(_to_uint8(image))
    draw = ImageDraw.Draw(img)
    if box is not None:
        center, scale = box
        half = 100.0 * float(scale)
        cx, cy = float(center[0]), float(center[1])
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], outline=BOX_COLOR, width=width)
    gt = kp[-24:]
    if openpose and kp.shape[0] == 49:
        op = kp[:25]
        for a, b in OPENPOSE25_EDGES:
            if op[a, 2] > 0 and op[b, 2] > 0:
                draw.line([tuple(op[a, :2]), tuple(op[b, :2])], fill=OPENPOSE_COLOR, width=1)
        for x, y, c in op:
            if c > 0:
                r = max(radius * 0.6, 0.5)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=OPENPOSE_COLOR)
    for a, b in GT24_EDGES:
        if gt[a, 2] > 0 and gt[b, 2] > 0:
            draw.line([tuple(gt[a, :2]), tuple(gt[b, :2])], fill=_side_color(a, b), width=width)
    for j, (x, y, c) in enumerate(gt):
        if c > 0:
            col = _side_color(j, j)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=col)
    return np.asarray(img)


def grid(images, rows: int, cols: int, pad: int = 2, fill=(0, 0, 0)) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images row by row into one image (missing tiles blank)."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("grid needs at least one image")
    h, w = images[0].shape[:2]
    out = np.empty((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    for k, im in enumerate(images[: rows * cols]):
        if im.shape[:2] != (h, w):
            raise ValueError(f"grid tile {k} has shape {im.shape}, expected ({h}, {w}, 3)")
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = _to_uint8(im)
    return out
