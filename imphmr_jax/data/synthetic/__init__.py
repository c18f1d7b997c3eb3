"""Synthetic humans: the default body rendered in sampled poses, shapes, clothes, lights, cameras
and backgrounds, with exact labels in the record layout of :mod:`imphmr_jax.data.schema`.

Four generators share one batched, jitted renderer:

* :func:`generate` — single images (the ``synthetic_humans`` dataset): one person per image at a
  varied position and size, sometimes truncated by the frame or covered by occluders.
* :func:`generate_multiview` — K calibrated cameras around the same posed person.
* :func:`generate_video` — smooth motion clips (key poses interpolated by slerp, a root trajectory,
  a fixed or slowly orbiting camera).
* :func:`generate_multiview_video` — each person performs a motion clip seen by a ring of fixed,
  calibrated cameras (ZJU-MoCap-like), procedurally textured by default.

Modules: ``config`` (SyntheticConfig, split codes, per-record random streams), ``rotations``
(host-side scipy rotations), ``placement`` (cameras, camera-frame labels, depth and position
fits), ``appearance`` (colours, backgrounds, occluders), ``texture`` (procedural 3D textures on
the canonical surface), ``renderer`` (SceneRenderer and batched rendering), ``records`` (codecs,
keypoints and box, schema records), ``single`` / ``multiview`` / ``video`` / ``multiview_video``
(the generators), ``cli`` (``python -m imphmr_jax.data.synthetic``).

Frames and conventions (shared with the rest of the project):

* SMPL/world frame: y up, the rest body faces +z, metres. Camera frame as SPIN: x right, y DOWN,
  z forward. A world -> camera rotation ``R`` maps world axes to camera axes (``X_c = R X_w + t``);
  the camera looking at a person's front from +z has ``R = diag(1, -1, -1)`` (= R_x(pi)).
* The stored ``pose`` has the global orientation in the CAMERA frame (``R @ R_world_global``) and
  ``cam_t`` is chosen so that, exactly, camera-frame vertices =
  ``smpl_jax.forward(body, pose, betas).vertices + cam_t``. Because SMPL rotates the global
  orientation about the rest root joint ``J0`` (not the origin), ``cam_t = R (J0 + transl_w) + t -
  J0`` rather than ``R transl_w + t``.
* Intrinsics ``[fx, fy, cx, cy]`` in pixels of the stored square image, principal point at the
  image centre, pixel centres at +0.5 (see :mod:`imphmr_jax.geometry.camera`).
* Images are RGB; the mask PNG is single-channel, 255 on the person's full silhouette (occluders
  ignored), 0 elsewhere.

Determinism: each record is a function of ``(config, split, index)`` only — its host-side random
draws come from ``numpy.random.default_rng([seed, split code, generator kind, index])`` — so
record i is the same whatever ``num`` or ``batch_size`` (up to floating-point reduction order in
the batched rendering). The 'train' split uses code 0, 'test' code 1, 'validation' code 2 and any
other name the CRC32 of its name, so splits never share a random stream.
"""
from imphmr_jax.data.synthetic.appearance import sample_background
from imphmr_jax.data.synthetic.cli import main, sample_figure
from imphmr_jax.data.synthetic.config import SyntheticConfig, split_code
from imphmr_jax.data.synthetic.multiview import generate_multiview
from imphmr_jax.data.synthetic.multiview_video import (MULTIVIEW_VIDEO_DEFAULTS,
                                                       generate_multiview_video,
                                                       multiview_video_figure)
from imphmr_jax.data.synthetic.placement import look_at_rotation
from imphmr_jax.data.synthetic.records import decode_mask
from imphmr_jax.data.synthetic.rotations import set_yaw
from imphmr_jax.data.synthetic.single import generate, generate_batches, sample_scene
from imphmr_jax.data.synthetic.video import generate_video

__all__ = [
    "MULTIVIEW_VIDEO_DEFAULTS", "SyntheticConfig", "decode_mask", "generate", "generate_batches",
    "generate_multiview", "generate_multiview_video", "generate_video", "look_at_rotation", "main",
    "multiview_video_figure", "sample_background", "sample_figure", "sample_scene", "set_yaw",
    "split_code",
]
