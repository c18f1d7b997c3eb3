"""NeuHMR's joint cues: per-joint visibility 𝒱 from the rendered depth 𝒟, registered joint
features 𝒥 from the anchors, S Gaussian candidates (std σ) around the HMR joints matched against
𝒥 in the target frame, and the robust matching loss L_jm. S = 128 and the Gaussian are the
paper's (supplementary material); the rest of the mechanism is a project choice.

    𝒱:  v_j = [z_j − 𝒟(u_j) < τ] ∧ [W(u_j) >= 0.5] ∧ [u_j in the image] ∧ [z_j > 0],  u_j = π(J_j)
    𝒥:  f_j^reg = normalise(mean_{a : v_j^a} F(I_a)(u_j^a))
    candidates:  x_s = J_j^HMR + σ ε_s,  ε_s ~ N(0, I₃),  s = 1..S   (S = 128; σ = 0.05 m)
    score:  c_s = cos(F(I_t)(π(x_s)), f_j^reg);  target = π(x_s*) (argmax) or the soft-argmax
    L_jm = Σ_j v_j ρ(‖π(J_j(θ_t)) − target_j‖ / diag) / max(Σ_j v_j, 1),  ρ = Geman–McClure

Frames and units: camera frame x right, y down, z forward, metres; K (3, 3) (or [fx, fy, cx, cy])
in pixels; image coordinates (u, v) with pixel (row i, col j) centred at (j + 0.5, i + 0.5), the
image spanning [0, W] × [0, H] (`imphmr_jax.geometry.camera`). The projection π and the bilinear
feature lookup are the GHN's (`neuhmr_jax.ghn.features.project_points`, `.sample_features`), so
feature maps F = 𝓕(I) are at half resolution and looked up with its mapping.

Everything is jax.numpy and jittable (sizes such as `image_size` and `num_candidates` static).
Functions take one frame (batch frames with `jax.vmap`), except `matching_loss`, which also sums
over leading frame dims. Only L_jm is meant to be differentiated (w.r.t. the projected joints of
the current pose): 𝒱 is boolean, and 𝒥 and the matched targets depend only on the images, the
anchors and the HMR joints, so they enter L_jm as constants (stop_gradient them if a caller
computes them from optimised quantities).
"""
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from imphmr_jax.cli import InputError
from neuhmr_jax.ghn.features import project_points, sample_features
from smpl_jax.numerics import safe_normalize

# Floor on squared feature norms when normalising (a zero feature stays zero, finite gradients).
_NORM_EPS_SQ = 1e-12
# Logit given to invalid candidates in the soft-argmax: exp underflows to exactly 0 next to any
# valid candidate (|cos / temperature| is small), and with no valid candidate the weights stay
# finite (uniform) instead of 0/0.
_INVALID_LOGIT = -1e30


def project(points_cam: jax.Array, K: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """π of camera-frame points (the GHN's `project_points` with R = I, t = 0).

    Args:
      points_cam: (..., 3) camera-frame points, metres.
      K: (3, 3) calibration matrix or (4,) [fx, fy, cx, cy], pixels.
    Returns:
      pixels: (..., 2) image coordinates (u, v), pixels.
      depth: (...,) camera-frame z, metres (points with z <= 0 get mirrored, finite pixels).
    """
    points_cam = jnp.asarray(points_cam)
    dtype = jnp.result_type(points_cam, jnp.float32)
    return project_points(points_cam, K, jnp.eye(3, dtype=dtype), jnp.zeros(3, dtype))


def joint_visibility(joints_cam: jax.Array, K: jax.Array, depth_map: jax.Array,
                     occupancy_map: jax.Array, tau: float = 0.15,
                     min_occupancy: float = 0.5) -> jax.Array:
    """𝒱: which joints the rendered avatar shows, v_j = [z_j − 𝒟(u_j) < τ] ∧ [W(u_j) >= 0.5] ∧
    u_j inside the image ∧ z_j > 0.

    𝒟 and W are read at the nearest pixel, the one containing u_j (row ⌊v⌋, column ⌊u⌋), not
    bilinearly: at the silhouette a bilinear read would mix the body's depth with the 0 of empty
    pixels. A joint deeper than the rendered surface by τ (≈ the body's half thickness) is
    occluded by another body part; where nothing is rendered 𝒟 = 0 and W < 0.5, so v_j = 0.

    Args:
      joints_cam: (J, 3) joints J_j in the camera frame, metres (any leading dims work).
      K: (3, 3) or (4,) intrinsics at the maps' resolution (for maps rendered at a reduced
        resolution, rescale K with `imphmr_jax.geometry.camera.rescale_intrinsics`).
      depth_map: (H, W) expected depth 𝒟 along the camera z, metres, 0 where nothing is rendered.
      occupancy_map: (H, W) accumulated occupancy W in [0, 1].
      tau: τ, metres.
      min_occupancy: the occupancy a joint's pixel needs.
    Returns:
      (J,) bool visibility.
    Raises:
      InputError: the two maps are not the same (H, W) shape.
    """
    depth_map, occupancy_map = jnp.asarray(depth_map), jnp.asarray(occupancy_map)
    if depth_map.ndim != 2 or depth_map.shape != occupancy_map.shape:
        raise InputError(f"depth and occupancy maps must be (H, W) arrays of the same shape, got "
                         f"{depth_map.shape} and {occupancy_map.shape}")
    H, W = depth_map.shape
    pixels, z = project(joints_cam, K)
    u, v = pixels[..., 0], pixels[..., 1]
    # NaN compares False, so non-finite pixels are outside.
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    col = jnp.clip(jnp.floor(jnp.where(inside, u, 0.0)), 0, W - 1).astype(jnp.int32)
    row = jnp.clip(jnp.floor(jnp.where(inside, v, 0.0)), 0, H - 1).astype(jnp.int32)
    return (inside & (z - depth_map[row, col] < tau)
            & (occupancy_map[row, col] >= min_occupancy))


def sample_feature_at(feature_map: jax.Array, pixels: jax.Array, image_size: Tuple[int, int],
                      depth: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
    """F(I)(u): bilinear lookup at image positions (the GHN's `sample_features`).

    Args:
      feature_map: (h, w, C) F = 𝓕(I), covering the whole image (half resolution for 𝓕).
      pixels: (..., 2) full-resolution image coordinates (u, v).
      image_size: (H, W) of the image, pixels (static).
      depth: optional (...,) camera z of the points; None treats every point as in front.
    Returns:
      feats: (..., C), zero where not valid.
      valid: (...,) bool: inside [0, W] × [0, H], finite, and in front of the camera.
    """
    pixels = jnp.asarray(pixels)
    if depth is None:
        depth = jnp.ones(pixels.shape[:-1], jnp.result_type(pixels, jnp.float32))
    return sample_features(jnp.asarray(feature_map), pixels, image_size, depth)


def register_joint_features(anchor_feature_maps: jax.Array, anchor_joints_px: jax.Array,
                            anchor_visibility: jax.Array,
                            image_size: Tuple[int, int]) -> Tuple[jax.Array, jax.Array]:
    """𝒥: f_j^reg = normalise(mean over the anchors a with v_j^a = 1 of F(I_a)(u_j^a)).

    The raw features are averaged first and the mean is L2-normalised, so anchors with
    stronger features weigh more. A joint no anchor sees gets the zero vector.

    Args:
      anchor_feature_maps: (A, h, w, C) F(I_a) of the anchor images.
      anchor_joints_px: (A, J, 2) u_j^a = π(J_j^a), full-resolution pixels.
      anchor_visibility: (A, J) bool v_j^a (`joint_visibility` on each anchor's rendering).
      image_size: (H, W) of the anchor images (static).
    Returns:
      registered: (J, C) unit-norm f_j^reg (zero rows where not registered).
      is_registered: (J,) bool, some anchor sees the joint (inside its image).
    """
    feats, valid = jax.vmap(lambda F, px: sample_feature_at(F, px, image_size))(
        anchor_feature_maps, anchor_joints_px)
    weight = (jnp.asarray(anchor_visibility, bool) & valid).astype(feats.dtype)  # (A, J)
    count = jnp.sum(weight, axis=0)
    mean = jnp.einsum("aj,ajc->jc", weight, feats) / jnp.maximum(count, 1.0)[:, None]
    return safe_normalize(mean, _NORM_EPS_SQ), count > 0


def joint_candidates(key: jax.Array, joints_cam: jax.Array, sigma: float = 0.05,
                     num_candidates: int = 128) -> jax.Array:
    """x_s = J_j^HMR + σ ε_s, ε_s ~ N(0, I₃): S 3D candidates per joint in the camera frame.

    Args:
      key: PRNG key.
      joints_cam: (J, 3) the HMR estimator's joints J^HMR, camera frame, metres.
      sigma: σ, metres (0.05: project choice; the paper does not give it).
      num_candidates: S (the paper's 128; static).
    Returns:
      (J, S, 3) candidates, metres.
    """
    joints_cam = jnp.asarray(joints_cam)
    eps = jax.random.normal(key, joints_cam.shape[:-1] + (num_candidates, 3),
                            jnp.result_type(joints_cam, jnp.float32))
    return joints_cam[..., None, :] + sigma * eps


class Match(NamedTuple):
    """The matched target of every joint (`match_candidates`).

    target_px: (J, 2) target pixel π(x_s*) (hard) or Σ_s softmax_s(c_s / T) π(x_s) (soft).
    score: (J,) the best cosine score max_s c_s over valid candidates; -inf where none is valid.
    valid: (J,) bool: some candidate fell inside the image.
    """

    target_px: jax.Array
    score: jax.Array
    valid: jax.Array


def match_candidates(feature_map: jax.Array, candidates_px: jax.Array, registered: jax.Array,
                     image_size: Tuple[int, int], temperature: float = 0.05, soft: bool = True,
                     candidates_depth: Optional[jax.Array] = None) -> Match:
    """Match the S candidates of every joint against its registered feature f_j^reg.

    c_s = cos(F(I_t)(π(x_s)), f_j^reg); candidates outside the image (or behind the camera, when
    `candidates_depth` is given) are excluded. Hard: the target is the argmax candidate's pixel
    (the first on ties). Soft: the softmax(c / temperature)-weighted mean of the candidates'
    pixels. A joint with a zero f_j^reg (not registered) scores 0 everywhere, so its target is
    meaningless: mask it with `register_joint_features`' is_registered.

    Args:
      feature_map: (h, w, C) F(I_t) of the target frame.
      candidates_px: (J, S, 2) π(x_s), full-resolution pixels.
      registered: (J, C) f_j^reg (unit norm or zero).
      image_size: (H, W) of the target image (static).
      temperature: soft-argmax temperature on the cosine (0.05: project choice).
      soft: soft-argmax (True) or hard argmax (False) (static).
      candidates_depth: optional (J, S) camera z of the candidates.
    Returns:
      `Match` (target_px (J, 2), score (J,), valid (J,)).
    """
    candidates_px = jnp.asarray(candidates_px)
    feats, ok = sample_feature_at(feature_map, candidates_px, image_size, candidates_depth)
    scores = jnp.sum(safe_normalize(feats, _NORM_EPS_SQ) * registered[:, None, :], axis=-1)
    valid = jnp.any(ok, axis=-1)
    score = jnp.max(jnp.where(ok, scores, -jnp.inf), axis=-1)
    if soft:
        weights = jax.nn.softmax(jnp.where(ok, scores / temperature, _INVALID_LOGIT), axis=-1)
        target = jnp.einsum("js,jsd->jd", weights, candidates_px)
    else:
        best = jnp.argmax(jnp.where(ok, scores, -jnp.inf), axis=-1)
        target = jnp.take_along_axis(candidates_px, best[:, None, None], axis=1)[:, 0]
    return Match(target, score, valid)


def geman_mcclure(x: jax.Array, scale: float) -> jax.Array:
    """Geman–McClure ρ(x) = s² x² / (s² + x²) (SMPLify's and NeMo's GMoF with rho = s).

    ≈ x² for |x| << s, saturating at s² for |x| >> s. (NeMo's GMoF with sqrt=True puts the norm
    where x² stands; this is the standard form on the squared residual.)

    Args:
      x: (...) residuals.
      scale: s > 0, in the units of x.
    Returns:
      (...) ρ(x).
    """
    return _geman_mcclure_sq(jnp.square(x), scale)


def _geman_mcclure_sq(x_sq, scale):
    """ρ from the squared residual: smooth at 0, unlike going through a norm."""
    s_sq = scale * scale
    return s_sq * x_sq / (s_sq + x_sq)


def matching_loss(joints_px: jax.Array, targets_px: jax.Array, visible: jax.Array, diag,
                  scale: float = 0.1) -> jax.Array:
    """L_jm = Σ_j v_j ρ(‖π(J_j(θ_t)) − target_j‖ / diag) / max(Σ_j v_j, 1).

    ρ = `geman_mcclure` with `scale` in units of the diagonal (0.1, a project choice: residuals
    beyond ~10% of the person's box diagonal count as outliers). Computed from the squared
    residual, so the gradient is finite at zero residual; joints with v_j = 0 contribute nothing,
    not even NaN from their targets. Leading dims (frames) are summed with the joints.

    Args:
      joints_px: (..., J, 2) projected joints of the current pose, pixels.
      targets_px: (..., J, 2) matched targets (`match_candidates`), pixels.
      visible: (..., J) bool or float weights v_j (e.g. 𝒱 ∧ is_registered ∧ match valid).
      diag: scalar or (...,) the person's bounding-box diagonal, pixels.
      scale: Geman–McClure s, relative to diag.
    Returns:
      () scalar.
    """
    v = jnp.asarray(visible).astype(jnp.result_type(joints_px, jnp.float32))
    diff = jnp.where(v[..., None] > 0, joints_px - targets_px, 0.0)
    x_sq = jnp.sum(diff * diff, axis=-1) / jnp.square(jnp.asarray(diag))[..., None]
    return jnp.sum(v * _geman_mcclure_sq(x_sq, scale)) / jnp.maximum(jnp.sum(v), 1.0)
