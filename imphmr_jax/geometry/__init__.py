"""Cameras, rays and view rotations that are not SMPL-specific (rotations live in smpl_jax.rotations)."""
from imphmr_jax.geometry.camera import (
    FOCAL_LENGTH,
    IMG_RES,
    camera_rays,
    estimate_translation,
    intrinsics,
    perspective_projection_normalized,
    pixel_centers,
    project,
    rescale_intrinsics,
    spin_intrinsics,
    transform,
    translation_to_weak_perspective,
    unproject,
    weak_perspective_to_translation,
)
from imphmr_jax.geometry.views import (
    R_y,
    ViewCameraConfig,
    ViewRays,
    canonical_ray_directions,
    giraffe_grid,
    rotate_global_orient,
    rotate_points,
    rotate_pose,
    view_rays,
    world_to_view,
)
