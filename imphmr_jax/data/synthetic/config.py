"""What defines a synthetic dataset: :class:`SyntheticConfig`, the split codes and the host random
stream of each record (see the package doc for the determinism contract)."""
from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from imphmr_jax.data import pose_sampler

# Generator kinds folded into the random streams, so that single-view record i, multi-view person i
# and video clip i never share a stream.
KIND_SINGLE, KIND_MULTIVIEW, KIND_VIDEO = 0, 1, 2
# Multi-view video person i (a motion clip seen by a ring of fixed cameras; multiview_video.py).
KIND_MULTIVIEW_VIDEO = 3
TEXTURES = ("flat", "procedural")
_SPLIT_CODES = {"train": 0, "test": 1, "validation": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic dataset (hashable; records are a function of it).

    Attributes:
      image_size: stored square image side, pixels.
      body: ``smpl_jax.load`` name or path, used for the images AND the labels.
      pose_weights: () for ``pose_sampler.DEFAULT_WEIGHTS``, else ((family, weight), ...).
      fraction_2d_only: probability that a single-view sample loses its 3D labels (has_smpl =
        has_pose_3d = has_camera = 0; pose, betas, joints_3d, cam_t and intrinsics zeroed; 2D
        keypoints, box and mask kept), like the real 2D-only datasets. Training splits only: the
        test split is always fully labelled.
      truncation_prob: probability that a single-view person is pushed partly out of the frame.
      truncation_range: fraction (of the person's projected box side) pushed outside the image.
      occluder_prob: probability of 1-2 random shapes drawn over part of the person.
      focal_range: focal length range in units of image_size (focal px = factor * image_size);
        1.0 is a ~53 degree field of view, 2.5 a ~23 degree one.
      fill_range: the person's larger projected box side as a fraction of the image side
        (single view; multi-view / video: the half-extent around the image centre).
      distance_range: allowed root depth, metres (the fill is given up where it would need more).
      elevation_range: camera elevation above the person's root, degrees (positive looks down).
      azimuth_range: single-view camera azimuth, degrees.
      background_clutter: 0..1, the procedural background's pattern opacity and shape frequency
        (1 = full variety, 0 = plain gradients).
      facing_prob, facing_range: single view: with probability facing_prob the body's yaw is
        redrawn uniformly in facing_range (degrees, 0 = facing the camera), as most photographs
        show people roughly facing the camera; otherwise the sampler's uniform yaw is kept (back
        and side views). Without this prior a small model cannot tell front from back at low
        resolution and its global orientation, and with it the body pose, stays near chance.
      roll_range: camera roll about its optical axis, degrees.
      light_ambient_range, light_diffuse_range: Lambert shading weights.
      grain_range: per-pixel uniform noise amplitude added to the final image (0..1 units).
      image_format: 'jpeg' or 'png'; jpeg_quality: Pillow JPEG quality.
      video_fps: frame rate of generate_video, Hz.
      video_key_interval: frames between key poses in a clip.
      video_root_speed: root speed range on the ground plane, m/s.
      video_yaw_rate: maximum |body yaw rate|, degrees/s.
      video_orbit_prob: probability that a clip's camera orbits (else it is fixed).
      video_orbit_rate: orbit speed range, degrees/s.
      multiview_elevation_range: per-view elevation range, degrees.
      texture: 'flat' (per-region colours blended per vertex, optional shirt stripes: the look of
        the default, multiview and video datasets) or 'procedural' (per-pixel 3D textures on the
        canonical rest-pose surface: prints, fabric grain, skin mottling, hair strands; see
        :mod:`.texture`). The texture's draws come from a child stream of each record's generator,
        so switching it changes the images only, never a label or another draw.
      seed: the train split's seed; other splits derive their streams from it (see the package doc).
    """

    image_size: int = 256
    body: str = "default"
    facing_prob: float = 0.75
    background_clutter: float = 1.0
    facing_range: tuple = (-75.0, 75.0)
    pose_weights: tuple = ()
    fraction_2d_only: float = 0.2
    truncation_prob: float = 0.15
    truncation_range: tuple = (0.15, 0.45)
    occluder_prob: float = 0.25
    focal_range: tuple = (1.0, 2.5)
    fill_range: tuple = (0.5, 0.9)
    distance_range: tuple = (1.2, 20.0)
    elevation_range: tuple = (-15.0, 35.0)
    azimuth_range: tuple = (-20.0, 20.0)
    roll_range: tuple = (-12.0, 12.0)
    light_ambient_range: tuple = (0.25, 0.5)
    light_diffuse_range: tuple = (0.45, 0.8)
    grain_range: tuple = (0.0, 0.04)
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    video_fps: float = 30.0
    video_key_interval: int = 30
    video_root_speed: tuple = (0.0, 0.8)
    video_yaw_rate: float = 30.0
    video_orbit_prob: float = 0.5
    video_orbit_rate: tuple = (5.0, 20.0)
    multiview_elevation_range: tuple = (-10.0, 30.0)
    texture: str = "flat"
    seed: int = 0

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"SyntheticConfig.image_size must be >= 16, got {self.image_size}")
        if self.texture not in TEXTURES:
            raise ValueError(f"SyntheticConfig.texture must be one of {TEXTURES}, got "
                             f"{self.texture!r}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"SyntheticConfig.image_format must be 'jpeg' or 'png', got "
                             f"{self.image_format!r}")
        for name in ("fraction_2d_only", "truncation_prob", "occluder_prob", "video_orbit_prob",
                     "facing_prob", "background_clutter"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SyntheticConfig.{name} must be in [0, 1], got {v}")
        for name in ("truncation_range", "focal_range", "fill_range", "distance_range",
                     "elevation_range", "azimuth_range", "roll_range", "light_ambient_range",
                     "light_diffuse_range", "grain_range", "video_root_speed", "video_orbit_rate",
                     "multiview_elevation_range", "facing_range"):
            v = tuple(getattr(self, name))
            if len(v) != 2 or not v[0] <= v[1]:
                raise ValueError(f"SyntheticConfig.{name} must be a (lo, hi) pair with lo <= hi, "
                                 f"got {v}")
        if self.focal_range[0] <= 0 or self.fill_range[0] <= 0 or self.distance_range[0] <= 0:
            raise ValueError("SyntheticConfig.focal_range, fill_range and distance_range must be "
                             "positive")
        if self.video_key_interval < 1:
            raise ValueError(f"SyntheticConfig.video_key_interval must be >= 1, got "
                             f"{self.video_key_interval}")
        if self.pose_weights:
            pose_sampler.sample_poses(np.random.default_rng(0), 1, dict(self.pose_weights))

    @property
    def weights(self) -> dict:
        return dict(self.pose_weights) if self.pose_weights else dict(pose_sampler.DEFAULT_WEIGHTS)


def split_code(split: str) -> int:
    """Integer folded into every random stream of a split ('train' 0, 'test' 1, 'validation' 2)."""
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    return _SPLIT_CODES.get(split, zlib.crc32(split.encode("utf-8")) + 16)


def sample_rng(config: SyntheticConfig, split: str, kind: int, index: int) -> np.random.Generator:
    """The host random stream of one record (KIND_SINGLE) / person (KIND_MULTIVIEW) / clip
    (KIND_VIDEO) of ``split``."""
    return np.random.default_rng([int(config.seed) & 0xFFFFFFFF, split_code(split), kind,
                                  int(index)])


def uniform_deg(rng: np.random.Generator, deg_range) -> float:
    """One uniform draw in ``deg_range`` (lo, hi) degrees, returned in radians."""
    return math.radians(rng.uniform(*deg_range))
