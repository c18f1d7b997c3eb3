"""ImpHMR (Sec. 3.3, Fig. 2) and its two ablation baselines (Sec. 4.2, supplementary 6.1) as one
linen module; docs/method.md#forward-pass and docs/method.md#ablation-baselines.

variant 'imphmr':
  image --g (ResNet)--> z (B, h0, w0, C) --A (ForegroundAttention)--> z_fg (B, C)
  for every view φ: rays of the map_size x map_size view camera (geometry.views.view_rays),
  samples x = o + d·r, (σ, f) = h(γ(x), γ(r), z_fg) (FeatureField), eq. 4 integration
  (render.volume.integrate) -> f_φ (map_size, map_size, M_f) --AGG (models/aggregation.py)-->
  z_φ (M_f) --R--> Θ_φ,
  and the geometric guidance branch S_φ = D(f_φ) (SilhouetteDecoder).
variant 'baseline': SPIN's architecture, g -> global average pool -> R. No attention, no field, no
  decoder; views are ignored (one output view).
variant 'ptn': Baseline-PTN (models/ptn.py): the feature field is replaced by PTN's decoder, an
  explicit feature volume generated from z_fg and projected along the rays of view φ by a max over
  depth; AGG, R and D as in ImpHMR.

Every view of every image is rendered in one batched call (B·V·H·W·S points through one MLP); there
is no Python loop over views or pixels. φ enters only through cos/sin, so φ and φ + 2π render the
same map up to float rounding of the input angle. Inference uses φ = 0 (the input view).
"""
import dataclasses
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.geometry.views import ViewCameraConfig, view_rays
from imphmr_jax.models.aggregation import AGG
from imphmr_jax.models.attention import ForegroundAttention
from imphmr_jax.models.feature_field import FeatureField
from imphmr_jax.models.ptn import PTNVolumeGenerator, perspective_max_projection
from imphmr_jax.models.regressor import Regressor, spin_default_mean_params
from imphmr_jax.models.resnet import resnet18, resnet34, resnet50
from imphmr_jax.models.silhouette_decoder import SilhouetteDecoder
from imphmr_jax.render.volume import RenderResult, integrate, sample_depths

VARIANTS = ("imphmr", "baseline", "ptn")
_RESNETS = {18: resnet18, 34: resnet34, 50: resnet50}


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Encoder g built by ImpHMR itself: torchvision ResNet of this depth (18, 34, 50) and width."""

    depth: int = 50
    width: int = 64


def build_backbone(config: BackboneConfig, dtype, name=None) -> nn.Module:
    if config.depth not in _RESNETS:
        raise ValueError(f"backbone depth must be one of {sorted(_RESNETS)}, got {config.depth}")
    return _RESNETS[config.depth](width=config.width, dtype=dtype, name=name)


def soft_argmax_2d(heatmaps) -> jax.Array:
    """(B, h, w, K) logits -> (B, K, 2) expected (x, y) of the softmax over each map, in the
    normalised [-1, 1] image coordinates of SPIN's keypoints (pixel centres at (j + 0.5)/w·2 − 1),
    float32."""
    b, h, w, k = heatmaps.shape
    prob = jax.nn.softmax(heatmaps.astype(jnp.float32).reshape(b, h * w, k), axis=1)
    xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w * 2.0 - 1.0
    ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h * 2.0 - 1.0
    grid = jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(h * w, 2)
    return jnp.einsum("bpk,pc->bkc", prob, grid)


def volume_render_views(field_fn, rays, camera: ViewCameraConfig, key=None) -> RenderResult:
    """Volume-render a field along the rays of every view at once (ImpHMR eq. 3-4).

    Args:
      field_fn: (points (B, N, 3), viewdirs (B, N, 3)) -> (sigma (B, N), features (B, N, C)); the
        N = V·P·S samples of all views and pixels of one image go through it in one call.
      rays: `ViewRays` with fields (B, V, P, 3) from `view_rays`.
      camera: near, far and num_samples S of the depths along each ray.
      key: None for the fixed evaluation depths, else a key for per-ray stratified jitter.
    Returns:
      `RenderResult` with features (B, V, P, C), weights (B, V, P, S), depth and opacity (B, V, P).
    """
    b, v, p, _ = rays.origins.shape
    s = camera.num_samples
    # (S,) at evaluation, shared by all rays; (B, V, P, S) when jittered.
    depths = sample_depths(camera.near, camera.far, s, key=key,
                           batch_shape=() if key is None else (b, v, p))
    points = rays.origins[..., None, :] + depths[..., None] * rays.directions[..., None, :]
    viewdirs = jnp.broadcast_to(rays.viewdirs[..., None, :], points.shape)
    sigma, feats = field_fn(points.reshape(b, -1, 3), viewdirs.reshape(b, -1, 3))
    return integrate(sigma.reshape(b, v, p, s), feats.reshape(b, v, p, s, -1), depths,
                     jnp.linalg.norm(rays.directions, axis=-1))


class ImpHMR(nn.Module):
    """ImpHMR, 'baseline' (SPIN) or 'ptn' (Baseline-PTN); see the module docstring.

    Fields:
      variant: 'imphmr' | 'baseline' | 'ptn'.
      backbone: encoder g, a linen module (x (B,H,W,3), train) -> (B,h0,w0,C), or a BackboneConfig;
        None = ResNet-50, width 64.
      feature_size: M_f, channels of the rendered map f_φ and of z_φ (2048).
      field_hidden, point_octaves, dir_octaves, downscale, density_noise, density_bias_init:
        FeatureField's hidden, point_octaves, dir_octaves, downscale, noise_std, sigma_bias_init.
      map_size: H = W of f_φ (4 in the paper; 1, 2, 6 in its speed study); silhouettes are
        32·map_size pixels wide (128 at 4).
      camera: ViewCameraConfig (radius, fov, near/far, samples per ray).
      z_pooling: ForegroundAttention's pooling, 'mean' (the paper's GAP) or 'weighted'.
      mean_params: dict(pose (144,), shape (10,), cam (3,)) starting estimate of R; None = SPIN's
        default from `spin_default_mean_params()` (load SPIN's file with `load_mean_params`).
      regressor_iterations, dropout, regressor_hidden: R's settings (3, 0.5, 1024).
      use_decoder: build the geometric guidance branch D (training only in the paper).
      decoder_channels: D's five output widths (the project's reading,
        docs/method.md#geometric-guidance-d; the last must be 1).
      ptn_hidden, ptn_extent: Baseline-PTN's generator width and the half side of its volume.
      aux_keypoints: K > 0 adds an auxiliary 2D keypoint head (training signal only, not part of
        the paper; docs/method.md#auxiliary-keypoint-head): a 3×3 conv on the encoder's
        `aux_keypoint_stage` map ('stem', 'layer1', ...) gives K heatmaps whose soft-argmax is
        out['aux_keypoints'] (B, K, 2) in the crop's normalised [-1, 1] coordinates. Needs a
        ResNet encoder built from a BackboneConfig.
      dtype: computation dtype; parameters and batch statistics stay float32.

    __call__(images (B, H, W, 3), phis (B, V) radians, (B,) or None = one view at φ = 0, train,
             return_silhouette=False, silhouette_views=None) -> dict, V = number of views (1 for
             'baseline'):
      pose_6d (B, V, 144), rotmat (B, V, 24, 3, 3), betas (B, V, 10), cam (B, V, 3)  (float32);
      'imphmr'/'ptn' also: feature_map f_φ (B, V, m, m, M_f) and attention (B, h0, w0, 1) in dtype,
      and silhouette_logits (B, V, 32m, 32m) in dtype when use_decoder and (train or
      return_silhouette). silhouette_views (a static tuple of view indices, e.g. (1,) in training,
      where only the imagination view's silhouette enters the loss) decodes those views only:
      silhouette_logits is then (B, len(silhouette_views), 32m, 32m) in that order, and D's
      BatchNorm statistics come from those views.
    rngs when train: 'dropout' (R), and for 'imphmr' 'sampling' (jittered depths) and
    'density_noise' (σ noise; not needed when density_noise = 0). BatchNorm statistics live in the
    'batch_stats' collection (mutable when train).
    """

    variant: str = "imphmr"
    backbone: Any = None
    feature_size: int = 2048
    field_hidden: int = 128
    point_octaves: int = 10
    dir_octaves: int = 4
    downscale: float = 2.0
    map_size: int = 4
    camera: ViewCameraConfig = ViewCameraConfig()
    density_noise: float = 1.0
    density_bias_init: float = 0.0
    z_pooling: str = "mean"
    mean_params: Optional[Mapping[str, Any]] = None
    regressor_iterations: int = 3
    dropout: float = 0.5
    regressor_hidden: int = 1024
    use_decoder: bool = True
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 1)
    ptn_hidden: int = 64
    ptn_extent: float = 1.0
    aux_keypoints: int = 0
    aux_keypoint_stage: str = "layer2"
    dtype: Any = jnp.float32

    def _regressor(self):
        mean = self.mean_params if self.mean_params is not None else spin_default_mean_params()
        as_tuple = lambda k: tuple(float(v) for v in np.asarray(mean[k]).reshape(-1))  # hashable
        return Regressor(mean_pose=as_tuple("pose"), mean_shape=as_tuple("shape"),
                         mean_cam=as_tuple("cam"), num_iterations=self.regressor_iterations,
                         dropout=self.dropout, hidden=self.regressor_hidden, dtype=self.dtype,
                         name="regressor")

    @nn.compact
    def __call__(self, images, phis, train: bool, return_silhouette: bool = False,
                 silhouette_views: Optional[Sequence[int]] = None):
        if self.variant not in VARIANTS:
            raise ValueError(f"ImpHMR variant must be one of {VARIANTS}, got {self.variant!r}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3), got shape {images.shape}")
        b = images.shape[0]
        encoder = (self.backbone if isinstance(self.backbone, nn.Module) else
                   build_backbone(self.backbone or BackboneConfig(), self.dtype, name="backbone"))
        aux = None
        if self.aux_keypoints:
            if isinstance(self.backbone, nn.Module):
                raise ValueError("aux_keypoints needs the ResNet encoder built from a "
                                 "BackboneConfig (its intermediate maps)")
            maps = encoder(jnp.asarray(images, self.dtype), train, return_intermediates=True)
            if self.aux_keypoint_stage not in maps:
                raise ValueError(f"aux_keypoint_stage must be one of {sorted(maps)}, got "
                                 f"{self.aux_keypoint_stage!r}")
            z = maps[max(k for k in maps if k.startswith("layer"))]
            aux = soft_argmax_2d(nn.Conv(self.aux_keypoints, (3, 3), padding=1,
                                         dtype=self.dtype, name="aux_keypoint_head")(
                maps[self.aux_keypoint_stage]))
        else:
            z = encoder(jnp.asarray(images, self.dtype), train)  # (B, h0, w0, C)
        regressor = self._regressor()

        if self.variant == "baseline":
            # SPIN: AvgPool over the whole map, then R; there is no notion of a view.
            pooled = jnp.mean(z.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
            out = {k: v[:, None] for k, v in regressor(pooled, train).items()}
            if aux is not None:
                out["aux_keypoints"] = aux
            return out

        phis = jnp.zeros((b, 1), jnp.float32) if phis is None else jnp.asarray(phis, jnp.float32)
        if phis.ndim == 1:
            phis = phis[:, None]
        if phis.ndim != 2 or phis.shape[0] != b:
            raise ValueError(f"phis must be (B, V) or (B,) with B = {b}, got shape {phis.shape}")
        v, m = phis.shape[1], self.map_size

        attention_gate = ForegroundAttention(pooling=self.z_pooling, dtype=self.dtype,
                                             name="attention")
        attended, attention = attention_gate(z, train)
        z_fg = attention_gate.pool(attended, attention)  # (B, C)

        rays = view_rays(phis, m, m, self.camera)  # each (B, V, m·m, 3), row-major pixels
        if self.variant == "imphmr":
            fmap = self._render_field(rays, z_fg, train)
        else:
            fmap = self._render_ptn(rays, z_fg)
        fmap = fmap.reshape(b * v, m, m, self.feature_size)  # fold views into the batch
        z_phi = AGG(map_size=m, feature_size=self.feature_size, dtype=self.dtype,
                    name="agg")(fmap)  # (B·V, M_f)
        per_view = lambda x: x.reshape((b, v) + x.shape[1:])
        out = {k: per_view(val) for k, val in regressor(z_phi, train).items()}
        out["feature_map"] = per_view(fmap)
        out["attention"] = attention
        if aux is not None:
            out["aux_keypoints"] = aux

        # D is created at init even for an eval-mode init so that training finds its parameters.
        if self.use_decoder and (train or return_silhouette or self.is_initializing()):
            decoder = SilhouetteDecoder(channels=tuple(self.decoder_channels), dtype=self.dtype, name="silhouette_decoder")
            if silhouette_views is None or self.is_initializing():
                out["silhouette_logits"] = per_view(decoder(fmap, train))
            else:
                sel = tuple(int(i) for i in silhouette_views)
                if not sel or min(sel) < 0 or max(sel) >= v:
                    raise ValueError(f"silhouette_views {silhouette_views} must be indices of the "
                                     f"{v} views")
                maps = fmap.reshape((b, v) + fmap.shape[1:])[:, jnp.asarray(sel)]
                logits = decoder(maps.reshape((b * len(sel),) + fmap.shape[1:]), train)
                out["silhouette_logits"] = logits.reshape((b, len(sel)) + logits.shape[1:])
        return out

    def _render_field(self, rays, z_fg, train):
        """Eq. 3-4 for all views at once: rays (B, V, P, 3) -> f_φ (B, V, P, M_f) in dtype."""
        field = FeatureField(hidden=self.field_hidden, point_octaves=self.point_octaves,
                             dir_octaves=self.dir_octaves, downscale=self.downscale,
                             feature_size=self.feature_size, noise_std=self.density_noise,
                             sigma_bias_init=self.density_bias_init, dtype=self.dtype, name="feature_field")
        # Stratified depth jitter only in training (GIRAFFE); evaluation uses the fixed depths.
        key = self.make_rng("sampling") if train else None
        rendered = volume_render_views(lambda x, r: field(x, r, z_fg, train), rays, self.camera,
                                       key)
        return rendered.features.astype(self.dtype)

    def _render_ptn(self, rays, z_fg):
        """Baseline-PTN: generate the volume from z_fg and project it -> (B, V, P, M_f)."""
        volume = PTNVolumeGenerator(resolution=4, hidden=self.ptn_hidden,
                                    feature_size=self.feature_size, dtype=self.dtype,
                                    name="ptn_generator")(z_fg)
        return perspective_max_projection(volume, rays, self.camera, self.ptn_extent)
