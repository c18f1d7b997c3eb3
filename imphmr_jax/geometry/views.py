"""ImpHMR's view camera at azimuth φ and the rotation of ground truth to view φ.

Described in docs/method.md#view-camera-and-rays and docs/conventions.md#view-rotations.

Everything is in SPIN's camera frame (x right, y DOWN, z forward); the body (world) frame is the
input camera's axes with the body near the origin.

The view camera (a project choice, docs/method.md#view-camera-and-rays), φ in radians, any real
value (φ and φ + 2π agree):
    R_y(φ) = [[cos φ, 0, sin φ], [0, 1, 0], [-sin φ, 0, cos φ]]     (rotation by φ about +y)
    world -> camera φ:   X_c = R_y(φ)·X + (0, 0, radius)
    camera centre:       c(φ) = R_y(φ)^T (0, 0, -radius)
    ray direction:       R_y(φ)^T (u/f, v/f, 1),   f = 1/tan(fov/2)
φ = 0 is the input view: the camera sits at (0, 0, -radius) and looks along +z at the origin. At
φ = π/2 it sits at (+radius, 0, 0) looking along -x.

Sign conventions — read before writing a loss:
  * "Ground truth rotated to view φ" means R_y(φ) applied to the body: a body point X appears in
    camera φ exactly as R_y(φ)·X appears in camera 0. So the targets for the prediction made from
    view φ are `rotate_global_orient(go, φ)` (= R_y(φ)·R_go), `rotate_points(joints, φ, root)`,
    `rotate_pose(pose, φ)`, and the silhouette of `rotate_points(vertices, φ, root)`; β never rotates.
  * The paper's L_imag writes these targets as Ĵ_{-φ}, θ̂_{-φ}, Ŝ_{-φ} ("ground truth rotated by
    -φ about the vertical axis"): the camera moves by +φ around the body, so relative to the camera
    the body turns by -φ about the UP axis. Up is -y here (y points down), and a rotation by -φ
    about -y is a rotation by +φ about +y, i.e. R_y(+φ). Therefore the paper's "-φ" is THIS
    module's +φ: call the functions below with the same φ that rendered the view. Never negate.
  * L_cons: with R_go^φ = R_y(φ)·R_go^0, the orientation predicted from view φ1 carried to view φ2
    is `rotate_global_orient(go_phi1, phi2 - phi1)`.

Pixel grid of the rendered feature map (GIRAFFE's `arange_pixels`): u over the W columns
and v over the H rows take the values 2i/(n-1) - 1 (endpoints included; 0 when n = 1), row 0 is the
top of the image (v = -1, y up the image is negative as SPIN's y-down). Rays are flattened
row-major: index = row·W + col. This grid differs on purpose from the rasterizer's pixel-centre
grid in `camera.py`; it belongs to the feature field only.
"""
import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp

from smpl_jax.rotations import axis_angle_to_matrix, matrix_to_axis_angle


@dataclasses.dataclass(frozen=True)
class ViewCameraConfig:
    """GIRAFFE's camera defaults; ImpHMR's own values are unknown (docs/method.md#open-parameters).

    radius: distance of the camera centre from the body origin, same units as the body (metres).
    fov_deg: full field of view in degrees of the [-1, 1] image plane.
    near, far: depth range sampled along each ray (ray parameter d, with ray z-component 1).
    num_samples: samples per ray (the paper's 32).
    """

    radius: float = 2.732
    fov_deg: float = 49.13
    near: float = 0.5
    far: float = 6.0
    num_samples: int = 32

    @property
    def focal(self) -> float:
        """f = 1/tan(fov/2) on the [-1, 1] image plane (≈ 2.1875 at 49.13°)."""
        return 1.0 / math.tan(math.radians(self.fov_deg) / 2.0)


class ViewRays(NamedTuple):
    """Rays of view φ in the body frame; leading dims are those of φ, P = H·W (row-major).

    origins: (..., P, 3) camera centre c(φ), repeated per pixel.
    directions: (..., P, 3) unnormalised R_y(φ)^T (u/f, v/f, 1); sample points are
      origins + d·directions with d in [near, far].
    viewdirs: (..., P, 3) unit directions, the direction input of the feature field.
    """

    origins: jnp.ndarray
    directions: jnp.ndarray
    viewdirs: jnp.ndarray


def R_y(phi):  # noqa: N802 - the paper's name
    """(...,) azimuth in radians -> (..., 3, 3) rotation by φ about the +y (image-down) axis."""
    phi = jnp.asarray(phi, dtype=jnp.result_type(phi, float))
    c, s = jnp.cos(phi), jnp.sin(phi)
    zero, one = jnp.zeros_like(phi), jnp.ones_like(phi)
    return jnp.stack(
        [jnp.stack([c, zero, s], -1), jnp.stack([zero, one, zero], -1),
         jnp.stack([-s, zero, c], -1)],
        axis=-2,
    )


def giraffe_grid(n):
    """(n,) GIRAFFE pixel coordinates 2i/(n-1) - 1 on [-1, 1], endpoints included; [0.] for n = 1."""
    if n == 1:
        return jnp.zeros((1,))
    return 2.0 * jnp.arange(n) / (n - 1) - 1.0


def canonical_ray_directions(height, width, config=ViewCameraConfig()):
    """(H·W, 3) camera-space directions (u/f, v/f, 1) of the view camera, row-major, v down."""
    v, u = jnp.meshgrid(giraffe_grid(height), giraffe_grid(width), indexing="ij")
    f = config.focal
    d = jnp.stack([u / f, v / f, jnp.ones_like(u)], axis=-1)
    return d.reshape(height * width, 3)


def view_rays(phi, height, width, config=ViewCameraConfig()):
    """Rays of the view camera at azimuth φ, in the body frame.

    Args:
      phi: (...,) azimuth in radians, e.g. (B,) one view per sample or (B, V) several views per
        sample; each entry may differ.
      height, width: rendered feature-map size (the paper's 4×4).
      config: `ViewCameraConfig` (radius, fov).
    Returns:
      `ViewRays(origins, directions, viewdirs)`, each (..., H·W, 3) with pixel index row·W + col.
    """
    phi = jnp.asarray(phi, dtype=jnp.result_type(phi, float))
    rt = jnp.swapaxes(R_y(phi), -1, -2)  # camera -> world
    d_cam = canonical_ray_directions(height, width, config).astype(phi.dtype)
    directions = jnp.einsum("...ij,pj->...pi", rt, d_cam)
    centre = rt @ jnp.asarray([0.0, 0.0, -config.radius], dtype=phi.dtype)  # (..., 3)
    origins = jnp.broadcast_to(centre[..., None, :], directions.shape)
    # |d_cam| >= 1 (its z is 1), so the division is always safe.
    viewdirs = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return ViewRays(origins, directions, viewdirs)


def world_to_view(points, phi, config=ViewCameraConfig()):
    """(..., N, 3) body-frame points -> camera φ frame: R_y(φ)·X + (0, 0, radius)."""
    phi = jnp.asarray(phi, dtype=jnp.result_type(phi, float))
    t = jnp.asarray([0.0, 0.0, config.radius], dtype=phi.dtype)
    return jnp.einsum("...ij,...nj->...ni", R_y(phi), points) + t


# --------------------------------------------------------------------------- ground truth to view φ
def _is_matrix(x, is_matrix, vector_dims):
    if is_matrix is not None:
        return is_matrix
    return x.ndim >= vector_dims + 1 and x.shape[-2:] == (3, 3)


def rotate_global_orient(global_orient, phi, is_matrix=None):
    """Global orientation seen from view φ: R_y(φ)·R_go.

    Args:
      global_orient: (..., 3) axis-angle or (..., 3, 3) rotation matrices.
      phi: (...,) radians, broadcast against the leading dims.
      is_matrix: which kind `global_orient` is; None infers it from a trailing (3, 3), which is
        ambiguous only for axis-angle arrays whose second-to-last dim is 3 — pass it then.
    Returns:
      The same kind and shape. Axis-angle output has angle in [0, π].
    """
    if _is_matrix(global_orient, is_matrix, 1):
        return R_y(phi) @ global_orient
    return matrix_to_axis_angle(R_y(phi) @ axis_angle_to_matrix(global_orient))


def rotate_points(points, phi, center=None):
    """Rotate body points (joints or vertices) to view φ about a centre: R_y(φ)(P - c) + c.

    Args:
      points: (..., N, 3) metres.
      phi: (...,) radians.
      center: (..., 3) e.g. the root joint (docs/method.md#geometric-guidance-d); None rotates
        about the origin.
    Returns:
      (..., N, 3).
    """
    rot = R_y(phi)
    if center is None:
        return jnp.einsum("...ij,...nj->...ni", rot, points)
    c = center[..., None, :]
    return jnp.einsum("...ij,...nj->...ni", rot, points - c) + c


def rotate_pose(pose, phi, is_matrix=None):
    """Pose seen from view φ: only the global orientation (joint 0) is rotated.

    Args:
      pose: (..., J, 3) axis-angle or (..., J, 3, 3) matrices (SMPL: J = 24).
      phi: (...,) radians (the leading dims of pose without J).
      is_matrix: as in `rotate_global_orient`.
    Returns:
      The same kind and shape.
    """
    matrix = _is_matrix(pose, is_matrix, 2)
    root = pose[..., 0, :, :] if matrix else pose[..., 0, :]
    root = rotate_global_orient(root, phi, is_matrix=matrix)
    if matrix:
        return pose.at[..., 0, :, :].set(root)
    return pose.at[..., 0, :].set(root)
