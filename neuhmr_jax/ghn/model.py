"""Φ^GHN, the generalizable human NeRF: render a person in a target pose and camera from n
reference images of the same person (NeuHMR supplementary; docs/neuhmr.md#the-ghn).

For a ray of the target camera, samples x in the posed person's box (world frame) are mapped

    x  --𝒯 (backward warp, target pose θ_t)-->  x_c (canonical)  --𝒯⁻¹ (reference pose θ_k)-->  x_k
    x_k --π (reference camera k)--> u_k  --bilinear in F_k = 𝓕(I_k)-->  f_k

and the rendering network ψ turns the n reference features f_k and γ(x_c) into density σ' and
radiance c; the motion field's foreground weight is the occupancy weight w'. Volume rendering
(`imphmr_jax.render.volume.integrate`, the project's one integrator) gives per pixel the radiance C,
the occupancy W = Σ_j w_j and the expected depth.

`GHN` holds the static parts (config, body model, the skinning prior); everything learned is in a
plain params pytree, so `GHN.render(params, ...)` is a pure function of the target pose and
translation that NeuHMR differentiates. Reference poses enter through `stop_gradient` (the
references are fixed anchors). Frames: world metres; cameras map x_cam = R x_world + t; K in pixels.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax.render.volume import integrate
from neuhmr_jax.ghn import motion, rays as ray_lib
from neuhmr_jax.ghn.features import FeatureExtractor, project_points, sample_features
from neuhmr_jax.ghn.rendering_network import RenderingNetwork


@dataclasses.dataclass(frozen=True)
class GHNConfig:
    """Sizes of Φ^GHN. Defaults follow docs/neuhmr.md (ActorsNeRF-style 𝓕 and ψ, HumanNeRF's 𝒯).

    feature_width: 𝓕's ResNet-18 stem width (64: 256-channel maps F at half resolution).
    volume_resolution: side of the 25×R³ skinning-weight volume (HumanNeRF: 32).
    volume_embedding, volume_widths: the volume decoder's constant code size and layer widths.
    prior: 'gaussian_bones' (HumanNeRF's bone Gaussians) or 'body_weights' (the body's skinning
      weights at the nearest rest vertex) as the volume's log-prior.
    learn_volume: learn the skinning volume (HumanNeRF, ActorsNeRF); False uses the prior itself
      (the decoder's parameters stay unused), which with 'body_weights' is exact for an unclothed
      body and makes a training step several times cheaper (no derivative through the warps).
    occupancy: where the occupancy weight w' comes from. 'skinning': HumanNeRF's foreground, the
      summed bone weights of the skinning volume (it fades over a few voxels around the body);
      'surface': the subject's rest surface (a signed distance volume of the mean body, shifted
      by the subject's β through the shape directions) read at each bone's canonical candidate,
      sigmoid(-sdf / occupancy_softness), so the person's edge is sharp at any volume resolution
      (docs/neuhmr.md#occupancy).
    occupancy_softness: metres, the width of that edge ('surface').
    shape_resolution: side of the shape-direction volume ('surface'; a smooth field).
    psi_width, pe_octaves: ψ's width and the octaves of γ(x_c).
    num_samples: stratified samples per ray inside the posed box.
    box_margin: metres added around the joints for the posed (observation) and canonical boxes.
    chunk: rays rendered at once (under jax.checkpoint), bounding memory.
    background: constant colour composited where W < 1 (rays see the masked person on it).
    """

    feature_width: int = 64
    volume_resolution: int = 32
    volume_embedding: int = 256
    volume_widths: tuple = (512, 512, 256, 256)
    prior: str = "gaussian_bones"
    learn_volume: bool = True
    occupancy: str = "skinning"
    occupancy_softness: float = 0.01
    shape_resolution: int = 32
    psi_width: int = 256
    pe_octaves: int = 10
    num_samples: int = 64
    box_margin: float = 0.3
    chunk: int = 1024
    background: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def from_config(cls, c) -> "GHNConfig":
        """From a ConfigDict / mapping with (a subset of) these fields."""
        d = dict(c.items()) if hasattr(c, "items") else dict(c)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown GHN config fields {unknown}")
        for k in ("volume_widths", "background"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class Camera(NamedTuple):
    """A pinhole camera: K (3, 3) pixels, world -> camera R (3, 3), t (3,) metres."""

    K: jax.Array
    R: jax.Array
    t: jax.Array


class References(NamedTuple):
    """The n reference views of one person (leading axis n).

    images (n, H, W, 3) in [0, 1], the person masked onto `background` (as the target's loss
    sees it); cameras: Camera with (n, ...) arrays; pose (n, 24, 3) axis-angle world SMPL pose;
    transl (n, 3). `features`: the maps F = 𝓕(images) (n, H/2, W/2, C) once encoded
    (`GHN.encode`); None before.
    """

    images: jax.Array
    cameras: Camera
    pose: jax.Array
    transl: jax.Array
    features: Optional[jax.Array] = None


class Rendering(NamedTuple):
    """Per ray: radiance C (R, 3) composited on the background, occupancy W (R,) in [0, 1],
    expected depth (R,) along the camera z (metres; Σ w z / W, 0 where W = 0)."""

    rgb: jax.Array
    occupancy: jax.Array
    depth: jax.Array


class GHN:
    """Φ^GHN for one body model. Variables pytree: {'features': {'params', 'batch_stats'},
    'volume': {'params', 'prior'}, 'psi': {'params'}} and, with occupancy 'surface',
    'surface': {'sdf', 'shape_dirs'} (`motion.rest_surface_fields`); volume/prior and surface are
    fixed data (carried in the pytree, not trained, so XLA does not constant-fold them)."""

    def __init__(self, config: GHNConfig, body):
        self.config = config
        self.body = body
        self.extractor = FeatureExtractor(width=config.feature_width)
        self.skinning = motion.SkinningVolume(
            resolution=config.volume_resolution, num_channels=body.num_joints + 1,
            embedding_size=config.volume_embedding, widths=tuple(config.volume_widths))
        self.psi = RenderingNetwork(width=config.psi_width, pe_octaves=config.pe_octaves)
        self.canonical_box = motion.canonical_box(body, None, config.box_margin)
        if config.prior == "gaussian_bones":
            prior = motion.gaussian_bone_prior(body, None, config.volume_resolution,
                                               config.box_margin)
        elif config.prior == "body_weights":
            prior = motion.body_weight_prior(body, None, config.volume_resolution,
                                             config.box_margin)
        else:
            raise ValueError(f"GHN prior must be 'gaussian_bones' or 'body_weights', "
                             f"got {config.prior!r}")
        self.log_prior = jnp.log(jnp.maximum(jnp.asarray(prior, jnp.float32), 1e-6))
        if config.occupancy not in ("skinning", "surface"):
            raise ValueError(f"GHN occupancy must be 'skinning' or 'surface', "
                             f"got {config.occupancy!r}")
        self.surface = None
        if config.occupancy == "surface":
            self.surface = {k: jnp.asarray(v) for k, v in motion.rest_surface_fields(
                body, config.volume_resolution, config.box_margin,
                config.shape_resolution).items()}

    # -- parameters ---------------------------------------------------------------------------

    def init(self, key, image_size) -> dict:
        """Random parameters for images of `image_size` (H, W)."""
        k1, k2, k3 = jax.random.split(key, 3)
        h, w = image_size
        feats = self.extractor.init(k1, jnp.zeros((1, h, w, 3)), train=False)
        feats_channels = jax.eval_shape(
            lambda v: self.extractor.apply(v, jnp.zeros((1, h, w, 3)), train=False),
            feats).shape[-1]
        volume = dict(self.skinning.init(k2, self.log_prior), prior=self.log_prior)
        psi = self.psi.init(k3, jnp.zeros((2, 4, feats_channels)), jnp.ones((2, 4), bool),
                            jnp.zeros((4, 3)))
        out = {"features": dict(feats), "volume": dict(volume), "psi": dict(psi)}
        if self.surface is not None:
            out["surface"] = dict(self.surface)
        return out

    def skinning_weights(self, params) -> jax.Array:
        """The 25×R³ skinning-weight volume W (channels sum to 1)."""
        v = params["volume"]
        if not self.config.learn_volume:
            return jax.nn.softmax(v["prior"], axis=0)  # = the prior, renormalised
        return self.skinning.apply({"params": v["params"]}, v["prior"])

    def encode(self, params, images) -> jax.Array:
        """F = 𝓕(images): (..., H, W, 3) in [0, 1] -> (..., H/2, W/2, C) (BatchNorm in inference
        mode: the running statistics)."""
        lead = images.shape[:-3]
        flat = images.reshape((-1,) + images.shape[-3:])
        f = self.extractor.apply(params["features"], flat, train=False)
        return f.reshape(lead + f.shape[1:])

    # -- rendering ----------------------------------------------------------------------------

    def _bases(self, pose, betas, transl):
        return motion.observation_to_canonical(
            motion.bone_transforms(self.body, pose, betas, transl))

    def render(self, params, camera: Camera, pose, betas, refs: References, pixels, *,
               transl=None, key=None, weights=None, image_size=None) -> Rendering:
        """Render the pixels (R, 2) (x right, y down, pixel centres at +0.5) of the target camera
        for the person in `pose` (24, 3) axis-angle world pose, `betas` (NB,), `transl` (3,).

        refs.features must be set (`encode`), or refs.images is encoded here. `key` jitters the
        samples (training); None renders deterministically. `weights`: a precomputed skinning
        volume (`skinning_weights(params)`), else computed here. image_size (H, W) of the
        reference images (default: from refs.images). Differentiable w.r.t. params, pose,
        betas, transl and the camera.
        """
        cfg = self.config
        if refs.features is None:
            refs = refs._replace(features=self.encode(params, refs.images))
        if image_size is None:
            image_size = refs.images.shape[-3:-1]
        if weights is None:
            weights = self.skinning_weights(params)
        if transl is None:
            transl = jnp.zeros((3,), jnp.float32)
        bases_t = self._bases(pose, betas, transl)
        ref_bases = jax.vmap(lambda p, tr: self._bases(p, betas, tr))(
            jax.lax.stop_gradient(refs.pose), jax.lax.stop_gradient(refs.transl))
        joints = _posed_joints(self.body, pose, betas, transl)
        lo, hi = joints.min(0) - cfg.box_margin, joints.max(0) + cfg.box_margin
        box = self.canonical_box
        bg = jnp.asarray(cfg.background, jnp.float32)
        sdf = None
        if cfg.occupancy == "surface":
            sdf = motion.subject_sdf(params["surface"], box, betas)
            warp_weights = motion.bone_weights(weights)
        else:
            warp_weights = weights

        def render_chunk(chunk):
            pix, k = chunk["pixels"], chunk.get("key")
            r = ray_lib.camera_rays_world(camera.K, camera.R, camera.t, pix)
            near, far, hit = ray_lib.ray_box_intersection(r, lo, hi)
            far = jnp.where(hit, far, near + 1e-3)
            pts, depths = ray_lib.sample_points(r, near, far, cfg.num_samples, key=k)
            x_c, fg = motion.backward_warp(warp_weights, box, bases_t, pts, sdf=sdf,
                                           softness=cfg.occupancy_softness)
            feats, valid = jax.vmap(
                lambda fm, cam_k, bases_k: _reference_features(
                    weights, box, bases_k, x_c, fm, cam_k, image_size))(
                refs.features, refs.cameras, ref_bases)
            s, p = pts.shape[:2]
            sigma, rgb = self.psi.apply(
                params["psi"], feats.reshape(feats.shape[0], s * p, -1),
                valid.reshape(valid.shape[0], s * p), motion.normalise(x_c, box).reshape(-1, 3))
            occ = fg * hit[:, None]
            # The last sample's interval is one stratum (not GIRAFFE's infinite one: the ray
            # leaves the person's box there). Distances along the ray are depth steps times |d|.
            out = integrate(sigma.reshape(s, p), rgb.reshape(s, p, 3), depths,
                            jnp.linalg.norm(r.directions, axis=-1),
                            last_delta=(far - near) / cfg.num_samples, occupancy=occ)
            w_sum = out.opacity
            rgb_out = out.features + (1.0 - w_sum)[:, None] * bg
            depth = jnp.where(w_sum > 1e-6, out.depth / jnp.maximum(w_sum, 1e-6), 0.0)
            return {"rgb": rgb_out, "occupancy": jnp.clip(w_sum, 0.0, 1.0), "depth": depth}

        tree = {"pixels": jnp.asarray(pixels, jnp.float32)}
        if key is not None:
            n = tree["pixels"].shape[0]
            tree["key"] = jax.random.split(key, n)
            inner = render_chunk

            def render_chunk(chunk):  # noqa: F811 - per-ray keys -> one key per chunk
                return inner({"pixels": chunk["pixels"], "key": chunk["key"][0]})
        out = ray_lib.render_chunked(render_chunk, tree, cfg.chunk)
        return Rendering(out["rgb"], out["occupancy"], out["depth"])


def _posed_joints(body, pose, betas, transl):
    """(24, 3) world joints of one person (joints-only path of smpl_jax.forward)."""
    import smpl_jax
    out = smpl_jax.forward(body, jnp.asarray(pose)[None], jnp.asarray(betas)[None],
                           jnp.asarray(transl)[None], return_vertices=False)
    return out.joints[0, :24]


def _reference_features(weights, box, bases_k, x_c, fmap, cam: Camera, image_size):
    """f_k and its validity for canonical points x_c (R, S, 3) seen from reference k."""
    x_k = motion.forward_warp(weights, box, bases_k, x_c)
    pixels, depth = project_points(x_k, cam.K, cam.R, cam.t)
    return sample_features(fmap, pixels, image_size, depth)


def psnr(a, b, mask=None) -> jax.Array:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]; over the mask's pixels when given."""
    se = jnp.sum((jnp.asarray(a) - jnp.asarray(b)) ** 2, axis=-1)
    if mask is None:
        mse = jnp.mean(se) / a.shape[-1]
    else:
        m = jnp.asarray(mask, jnp.float32)
        mse = jnp.sum(se * m) / jnp.maximum(jnp.sum(m) * a.shape[-1], 1.0)
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
