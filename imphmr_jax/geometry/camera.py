"""Pinhole cameras, SPIN's weak-perspective camera and SPIN's ground-truth translation fit.

Conventions (shared with the rasterizer in `imphmr_jax.render`):
  * Camera frame as SPIN: x right, y down, z forward; units metres.
  * Image coordinates (u, v) in pixels, continuous: the image spans [0, W] x [0, H] and pixel
    (row i, col j) has its centre at (u, v) = (j + 0.5, i + 0.5).
  * A pinhole camera maps a camera-space point to u = fx·x/z + cx, v = fy·y/z + cy.
  * Intrinsics are arrays (..., 4) = [fx, fy, cx, cy] in pixels; `intrinsics` puts the principal
    point at the image centre (W/2, H/2), which is SPIN's (res/2, res/2) for a res×res crop.
  * Batch first: every function broadcasts over leading dims and is jit/vmap/grad safe.
"""
import jax.numpy as jnp

from smpl_jax.numerics import nonzero_denominator

FOCAL_LENGTH = 5000.0  # SPIN constants.FOCAL_LENGTH, pixels of a 224×224 crop
IMG_RES = 224  # SPIN constants.IMG_RES
# SPIN adds this to res·s so that s = 0 gives a huge but finite depth (SPIN:train/trainer.py).
_WEAK_PERSPECTIVE_EPS = 1e-9


# --------------------------------------------------------------------------- weak perspective
def weak_perspective_to_translation(cam, focal_length=FOCAL_LENGTH, img_res=IMG_RES):
    """SPIN's weak-perspective camera -> camera translation.

    Args:
      cam: (..., 3) [s, tx, ty]; s scales metres to normalised crop units ([-1, 1] over the crop).
      focal_length: focal length in pixels of the img_res crop.
      img_res: crop side in pixels.
    Returns:
      (..., 3) translation [tx, ty, 2·f / (img_res·s + 1e-9)] in metres.
    """
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    tz = 2.0 * focal_length / (img_res * s + _WEAK_PERSPECTIVE_EPS)
    return jnp.stack([tx, ty, tz], axis=-1)


def translation_to_weak_perspective(translation, focal_length=FOCAL_LENGTH, img_res=IMG_RES):
    """Exact inverse of `weak_perspective_to_translation`: (..., 3) [tx, ty, tz] -> (..., 3) [s, tx, ty]."""
    tx, ty, tz = translation[..., 0], translation[..., 1], translation[..., 2]
    s = (2.0 * focal_length / tz - _WEAK_PERSPECTIVE_EPS) / img_res
    return jnp.stack([s, tx, ty], axis=-1)


# --------------------------------------------------------------------------- intrinsics
def intrinsics(focal, height, width):
    """Pinhole intrinsics with the image centre as principal point.

    Args:
      focal: focal length in pixels, scalar or (...,) (fx = fy = focal).
      height, width: image size in pixels.
    Returns:
      (..., 4) [fx, fy, cx, cy] = [f, f, width/2, height/2].
    """
    focal = jnp.asarray(focal, dtype=jnp.result_type(float))
    return jnp.stack(
        [focal, focal, jnp.full_like(focal, width / 2.0), jnp.full_like(focal, height / 2.0)],
        axis=-1,
    )


def intrinsics_from_matrix(K):
    """(..., 3, 3) calibration matrices -> (..., 4) [fx, fy, cx, cy] = [K00, K11, K02, K12].

    For datasets that store K as a matrix (ZJU-MoCap, Human3.6M, EMDB). The project's pinhole
    model has no skew: the skew entry K01 is dropped (it is 0 in those datasets) and the last row
    is taken to be [0, 0, 1].
    """
    K = jnp.asarray(K)
    return jnp.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], axis=-1)


def as_intrinsics(K):
    """Intrinsics given either way -> (..., 4) [fx, fy, cx, cy]: a (..., 3, 3) calibration matrix
    goes through `intrinsics_from_matrix`, anything else (last axis 4) is returned as is. The two
    cannot be confused: a (..., 3, 3) array has last axis 3."""
    K = jnp.asarray(K)
    return intrinsics_from_matrix(K) if K.shape[-2:] == (3, 3) else K


def spin_intrinsics(img_res=IMG_RES, focal_length=FOCAL_LENGTH):
    """(4,) intrinsics of SPIN's crop camera: f = 5000, principal point (112, 112) at res 224."""
    return intrinsics(focal_length, img_res, img_res)


def _hw(size):
    if isinstance(size, (tuple, list)):
        return float(size[0]), float(size[1])
    return float(size), float(size)


def rescale_intrinsics(intr, old_size, new_size):
    """Intrinsics of the same camera for a resized image (same field of view).

    With pixel centres at j + 0.5, resizing the image by a factor scales every image coordinate
    by it, so fx, cx scale with the width ratio and fy, cy with the height ratio. E.g. ImpHMR's
    128×128 silhouettes: rescale_intrinsics(spin_intrinsics(), 224, 128) = [5000·128/224, ..., 64, 64].

    Args:
      intr: (..., 4) [fx, fy, cx, cy] for an image of old_size.
      old_size, new_size: int (square) or (height, width).
    Returns:
      (..., 4) intrinsics for new_size.
    """
    (oh, ow), (nh, nw) = _hw(old_size), _hw(new_size)
    sx, sy = nw / ow, nh / oh
    return intr * jnp.asarray([sx, sy, sx, sy], dtype=jnp.result_type(intr, float))


# --------------------------------------------------------------------------- pinhole
def transform(points, rotation, translation):
    """World -> camera: X_c = R·X + t.

    Args:
      points: (..., N, 3) world points, metres.
      rotation: (..., 3, 3) world-to-camera rotation.
      translation: (..., 3) metres.
    Returns:
      (..., N, 3) camera-space points.
    """
    return jnp.einsum("...ij,...nj->...ni", rotation, points) + translation[..., None, :]


def project(points_cam, intr):
    """Pinhole projection u = fx·x/z + cx, v = fy·y/z + cy.

    Args:
      points_cam: (..., N, 3) camera-space points, metres (z > 0 in front of the camera; z = 0 is
        not guarded and gives inf).
      intr: (..., 4) [fx, fy, cx, cy] in pixels.
    Returns:
      pixels: (..., N, 2) (u, v) in pixels (pixel centres at integer + 0.5).
      depth: (..., N) z in metres.
    """
    z = points_cam[..., 2]
    f, c = intr[..., None, 0:2], intr[..., None, 2:4]
    return f * points_cam[..., 0:2] / z[..., None] + c, z


def unproject(pixels, depth, intr):
    """Exact inverse of `project`: (..., N, 2) pixels, (..., N) depth z -> (..., N, 3) camera points."""
    f, c = intr[..., None, 0:2], intr[..., None, 2:4]
    xy = (pixels - c) / f * depth[..., None]
    return jnp.concatenate([xy, depth[..., None]], axis=-1)


def pixel_centers(height, width):
    """(H, W, 2) image coordinates (u, v) = (col + 0.5, row + 0.5) of every pixel centre."""
    v, u = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
    return jnp.stack([u, v], axis=-1).astype(jnp.result_type(float))


def camera_rays(intr, height, width):
    """Camera-space ray directions through pixel centres, unnormalised with z = 1.

    Args:
      intr: (..., 4) [fx, fy, cx, cy].
      height, width: image size in pixels.
    Returns:
      (..., H, W, 3) directions ((u - cx)/fx, (v - cy)/fy, 1); a point at depth z on the ray of a
      pixel is z times its direction.
    """
    uv = pixel_centers(height, width)
    f, c = intr[..., None, None, 0:2], intr[..., None, None, 2:4]
    xy = (uv - c) / f
    return jnp.concatenate([xy, jnp.ones_like(xy[..., :1])], axis=-1)


# --------------------------------------------------------------------------- SPIN projection
def perspective_projection_normalized(points, translation, focal_length=FOCAL_LENGTH,
                                      img_res=IMG_RES):
    """SPIN's projection of 3D joints to normalised crop coordinates (2D keypoint loss).

    x = f·(X + t)_xy / (Z + t_z) / (img_res / 2), i.e. SPIN's `perspective_projection` with R = I
    and centre 0, divided by res/2; ≈ s·(X_xy + t_xy) for a distant body (weak perspective).

    Args:
      points: (..., N, 3) joints in metres (model frame, camera axes).
      translation: (..., 3) camera translation, e.g. from `weak_perspective_to_translation`.
    Returns:
      (..., N, 2) in [-1, 1] over the crop (-1 = left/top edge).
    """
    p = points + translation[..., None, :]
    return focal_length * p[..., 0:2] / p[..., 2:3] / (img_res / 2.0)


def estimate_translation(joints_3d, keypoints_2d, focal_length=FOCAL_LENGTH, img_res=IMG_RES):
    """SPIN's `estimate_translation`: camera translation t putting 3D joints onto 2D keypoints.

    Weighted linear least squares (weights √conf on each equation, as SPIN) of the pinhole
    equations u_k = f·(X_k + t_x)/(Z_k + t_z) + c, linearised as
        f·t_x + (c - u_k)·t_z = (u_k - c)·Z_k - f·X_k     (and the same for y),
    with principal point c = img_res/2. SPIN forms the 3×3 normal equations and solves them; here
    the same normal equations are solved in closed form after eliminating t_x, t_y (the Schur
    complement), with weighted centring so that float32 keeps its precision (the raw 3×3 system has
    entries of order f²·J and is badly conditioned). The answer is the same least-squares solution.

    SPIN applies this to the 24 ground-truth joints (49-joint set, indices 25:49); slicing is the
    caller's job.

    Args:
      joints_3d: (B..., J, 3) joints in metres, camera axes, no translation.
      keypoints_2d: (B..., J, 3) [x, y, conf] with x, y in pixels of the img_res×img_res crop
        (SPIN: 0.5·res·(normalised + 1)).
    Returns:
      (B..., 3) translation in metres. Where the system is degenerate (fewer than two joints with
      conf > 0, or all keypoints at one point) the result is finite but meaningless (t_z = 0).
    """
    dtype = jnp.result_type(joints_3d, keypoints_2d, float)
    joints_3d, keypoints_2d = joints_3d.astype(dtype), keypoints_2d.astype(dtype)
    center = img_res / 2.0
    w = keypoints_2d[..., 2]  # (√conf)² from weighting each equation by √conf
    uv = keypoints_2d[..., 0:2]
    # Equations divided by f: t_xy + a_k·t_z = r_k.
    a = (center - uv) / focal_length  # (..., J, 2)
    r = -a * joints_3d[..., 2:3] - joints_3d[..., 0:2]  # ((u - c)Z - fX)/f

    safe_w_sum = nonzero_denominator(jnp.sum(w, axis=-1)[..., None, None])

    def wmean(x):  # weighted mean over joints of (..., J, 2)
        return jnp.sum(w[..., None] * x, axis=-2, keepdims=True) / safe_w_sum

    a_mean, r_mean = wmean(a), wmean(r)
    ac, rc = a - a_mean, r - r_mean
    num = jnp.sum(w[..., None] * ac * rc, axis=(-2, -1))
    den = jnp.sum(w[..., None] * ac * ac, axis=(-2, -1))
    tz = jnp.where(den > 0, num / nonzero_denominator(den), 0.0)
    txy = r_mean[..., 0, :] - tz[..., None] * a_mean[..., 0, :]
    return jnp.concatenate([txy, tz[..., None]], axis=-1)
