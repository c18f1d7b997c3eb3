"""ImpHMR from a config's `model` section, and its variables created from a key."""
from __future__ import annotations

import os
from typing import Optional

import jax
import jax.numpy as jnp

from imphmr_jax.geometry.views import ViewCameraConfig
from imphmr_jax.models.imphmr import BackboneConfig, ImpHMR
from imphmr_jax.models.regressor import load_mean_params

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(m, mean_params: Optional[dict] = None) -> ImpHMR:
    """The linen module of `config.model` (`m`). mean_params: SPIN's mean pose/shape/camera
    (dict of arrays) instead of the file named by `m.mean_params`."""
    dtype = _DTYPES.get(m.dtype)
    if dtype is None:
        raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {m.dtype!r}")
    if mean_params is None and m.mean_params:
        mean_params = load_mean_params(os.path.expanduser(m.mean_params))
    camera = ViewCameraConfig(radius=m.camera_radius, fov_deg=m.camera_fov, near=m.camera_near,
                              far=m.camera_far, num_samples=m.num_samples)
    return ImpHMR(variant=m.variant,
                  backbone=BackboneConfig(depth=m.backbone_depth, width=m.backbone_width),
                  feature_size=m.feature_size, field_hidden=m.field_hidden,
                  point_octaves=m.point_octaves, dir_octaves=m.dir_octaves, map_size=m.map_size,
                  camera=camera, density_noise=m.density_noise,
                  density_bias_init=m.density_bias_init, z_pooling=m.z_pooling,
                  mean_params=mean_params, regressor_iterations=m.regressor_iterations,
                  dropout=m.dropout, regressor_hidden=m.regressor_hidden,
                  use_decoder=m.use_decoder, decoder_channels=tuple(m.decoder_channels),
                  ptn_hidden=m.ptn_hidden, aux_keypoints=m.aux_keypoints,
                  aux_keypoint_stage=m.aux_keypoint_stage, dtype=dtype)


def init_variables(model: ImpHMR, key: jax.Array, img_res: int, num_views: int,
                   batch: int = 2) -> dict:
    """{'params', 'batch_stats'} of `model` for (batch, img_res, img_res, 3) crops and
    `num_views` views, drawn from `key` (split into the params / dropout / sampling / noise
    streams)."""
    images = jnp.zeros((batch, img_res, img_res, 3), jnp.float32)
    phis = jnp.zeros((batch, num_views), jnp.float32)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return model.init({"params": k1, "dropout": k2, "sampling": k3, "density_noise": k4},
                      images, phis, train=False)
