"""GHN feature extractor 𝓕, pixel-aligned feature lookup f_k = F(π(x_k)) and the projection π.

𝓕 is ActorsNeRF's pixel encoder (Mu et al., ICCV 2023; the pixelNeRF-style
spatial encoder `JitengMu/ActorsNeRF:core/nets/actorsnerf/encoder/resnet_nhp.py`): a ResNet-18
(`imphmr_jax.models.resnet`, torchvision layout) on the image scaled to [-1, 1], cut after its
second stage. Three maps are read: the stem (conv1 + bn1 + ReLU, before the max-pool; /2), layer1
(/4) and layer2 (/8); the two coarse maps are bilinearly upsampled with align_corners=True to the
stem's resolution and the three are concatenated along channels: F has width·(1 + 1 + 2) channels
(256 at width 64) at H/2 × W/2. Stages 3 and 4 of ResNet-18 are never run, so they have no
parameters here (`variables_from_resnet` drops them from converted ImageNet weights).

BatchNorm: `train=False` (the default) normalises with the running statistics, i.e. the ImageNet
statistics of converted weights; the GHN is trained with these statistics frozen (a batch of n = 2
reference views per sample is too small for useful batch statistics, and NeuHMR freezes the GHN
anyway). `train=True` normalises with batch statistics and updates them (apply with
mutable=['batch_stats']).

Coordinates: image coordinates as `imphmr_jax.geometry.camera` (x right, y down, the image spans
[0, W] × [0, H], pixel (row i, col j) centred at (j + 0.5, i + 0.5)); camera frame x right, y down,
z forward, world → camera x_cam = R x_world + t.
"""
from typing import Any, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from imphmr_jax.geometry import camera
from imphmr_jax.models.resnet import ResNet
from imphmr_jax.render.image_sampling import bilinear_sample, resize_bilinear_align_corners

# ResNet-18's first two stages: the only ones 𝓕 reads.
STAGE_SIZES = (2, 2)
# |z| below this (camera units, metres) is replaced by it in the perspective division, so that the
# pixels and their gradients stay finite for points at the camera plane (such points are masked
# invalid or land far outside the image anyway).
DEPTH_EPS = 1e-6


class FeatureExtractor(nn.Module):
    """𝓕: images -> pixel-aligned feature maps F (ActorsNeRF form, see the module docstring).

    Attributes:
      width: ResNet stem width (64 = torchvision's ResNet-18; smaller only for tests).
      dtype: computation dtype; parameters and batch statistics stay float32.
    """

    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Args:
          images: (B, H, W, 3) RGB in [0, 1] (H, W even; odd sizes give ceil(H/2) × ceil(W/2)).
          train: BatchNorm with batch statistics (see the module docstring); default running stats.
        Returns:
          F: (B, H/2, W/2, 4·width) = [stem (width) | layer1 ↑ (width) | layer2 ↑ (2·width)],
          in `dtype`.
        """
        x = 2.0 * jnp.asarray(images, self.dtype) - 1.0
        maps = ResNet(stage_sizes=STAGE_SIZES, block="basic", width=self.width, dtype=self.dtype,
                      name="backbone")(x, train, return_intermediates=True)
        stem = maps["stem"]
        size = stem.shape[1:3]
        return jnp.concatenate([stem, resize_bilinear_align_corners(maps["layer1"], size),
                                resize_bilinear_align_corners(maps["layer2"], size)], axis=-1)


def variables_from_resnet(resnet_variables: Mapping) -> dict:
    """ResNet-18 variables -> `FeatureExtractor` variables (same width).

    Args:
      resnet_variables: {'params', 'batch_stats'} of `ResNet(stage_sizes=(2, 2, 2, 2),
        block='basic')`, e.g. `imphmr_jax.convert.resnet_from_torch(torchvision_state_dict,
        (2, 2, 2, 2), 'basic')` or `imphmr_jax.convert.load_npz` of a file written by
        `python -m imphmr_jax.convert --kind resnet18`.
    Returns:
      {'params': {'backbone': ...}, 'batch_stats': {'backbone': ...}} holding conv1, bn1 and the
      blocks of layer1 and layer2 (layer3 and layer4 are dropped: 𝓕 does not read them).
    Raises:
      KeyError naming the missing entries.
    """
    blocks = [f"layer{i + 1}_{j}" for i, n in enumerate(STAGE_SIZES) for j in range(n)]
    # conv1 has no batch statistics; every other kept module holds a BatchNorm.
    keep = {"params": ["conv1", "bn1"] + blocks, "batch_stats": ["bn1"] + blocks}
    out = {}
    for collection, names in keep.items():
        src = resnet_variables[collection]
        missing = [k for k in names if k not in src]
        if missing:
            raise KeyError(f"ResNet-18 variables lack {collection} {missing}")
        out[collection] = {"backbone": {k: src[k] for k in names}}
    return out


def sample_features(F: jax.Array, pixels: jax.Array, image_size: Tuple[int, int],
                    depth: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Pixel-aligned features f = F(u): bilinear lookup of a feature map at image positions.

    Mapping (torch grid_sample with align_corners=False from the full image onto the map): the
    image [0, W] × [0, H] and the map's w × h cells cover the same rectangle, so image position
    (u, v) reads the map at index coordinates (x, y) = (u·w/W - 0.5, v·h/H - 0.5) (map element
    (i, j) centred at (j, i), `imphmr_jax.render.image_sampling`). For F = 𝓕(I) at half resolution,
    map element (i, j) sits at image position (2j + 1, 2i + 1), the centre of the 2 × 2 image
    pixels it summarises. Between the outermost element centres and the image border the value is
    clamped to the border element (grid_sample's padding_mode='border').

    Valid points: 0 <= u <= W and 0 <= v <= H (the image rectangle, boundary included), depth > 0
    (in front of the camera) and finite pixels. Invalid points get zero features and zero
    gradients (their pixels are replaced before the lookup, so NaN / inf pixels are harmless).

    Differentiable in `pixels` (the bilinear weights are linear inside a cell) and in F. For n
    reference views, vmap over (F, pixels, depth).

    Args:
      F: (h, w, C) one view's feature map.
      pixels: (..., 2) image coordinates (u, v) of the full-resolution image, pixels.
      image_size: (H, W) of the image F was computed from, pixels (static Python numbers).
      depth: (...,) camera-frame z of each point (from `project_points`).
    Returns:
      feats: (..., C) in F's dtype, zero where not valid.
      valid: (...,) bool.
    """
    H, W = float(image_size[0]), float(image_size[1])
    h, w = F.shape[0], F.shape[1]
    u, v = pixels[..., 0], pixels[..., 1]
    # NaN compares False, so non-finite pixels are invalid.
    valid = (depth > 0) & (u >= 0) & (u <= W) & (v >= 0) & (v <= H)
    safe = jnp.where(valid[..., None], pixels, 0.0)
    scale = jnp.asarray([w / W, h / H], dtype=jnp.result_type(pixels, float))
    feats = bilinear_sample(F, safe * scale - 0.5)
    return jnp.where(valid[..., None], feats, jnp.zeros((), F.dtype)), valid


def project_points(points_world: jax.Array, K: jax.Array, R: jax.Array,
                   t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """π: world points -> image coordinates and camera depth, x_cam = R x_world + t, pinhole K.

    Uses `imphmr_jax.geometry.camera.transform` and `.project`. In the division, a |z| below
    DEPTH_EPS is replaced by DEPTH_EPS, so pixels and gradients are finite everywhere; points with
    z <= 0 get the (mirrored) pinhole pixels and are masked by `sample_features` through depth.

    Args:
      points_world: (..., 3) world points, metres.
      K: (3, 3) calibration matrix (zero skew) or (4,) [fx, fy, cx, cy], pixels.
      R: (3, 3) world-to-camera rotation.
      t: (3,) world-to-camera translation, metres.
    Returns:
      pixels: (..., 2) image coordinates (u, v), pixel centres at integer + 0.5.
      depth: (...,) camera-frame z, metres (unguarded).
    """
    points_world = jnp.asarray(points_world)
    lead = points_world.shape[:-1]
    cam = camera.transform(points_world.reshape(-1, 3), jnp.asarray(R), jnp.asarray(t))
    z = cam[..., 2]
    z_safe = jnp.where(jnp.abs(z) > DEPTH_EPS, z, DEPTH_EPS)
    pixels, _ = camera.project(jnp.concatenate([cam[..., :2], z_safe[..., None]], -1),
                               camera.as_intrinsics(K))
    return pixels.reshape(lead + (2,)), z.reshape(lead)
