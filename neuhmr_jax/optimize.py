"""NeuHMR's refinement: a video's per-frame SMPL (from any HMR estimator) refined by optimising the
motion field Φ^MLP against the frozen generalizable human NeRF Φ^GHN.

    python -m neuhmr_jax.optimize --video FRAMES_DIR|VIDEO.mp4 --init INIT \\
        --intrinsics fx,fy,cx,cy|FILE --workdir DIR [--masks DIR] [--ghn GHN_WORKDIR] \\
        [--config.optim.steps=500 ...]

The monocular camera is the world of the GHN: R = I, t = 0, and every pose (root orientation),
translation and joint is in the camera frame (x right, y down, z forward, metres), as
`neuhmr_jax.data.inits.Init` holds it. Method (docs/neuhmr.md; [B] = stated in NeuHMR's
supplementary material, the rest are project choices; values and their sources:
`neuhmr_jax.config.optimize_config`):

**Prepared once** (`prepare`, no gradients; everything computed from the HMR initialisation θ⁰):
  * β: the per-frame median of the init's shape, fixed (`config.betas = 'per_frame'` keeps the
    init's own β of every frame).
  * anchors: N = T/10 candidates reduced by FPS to N̂ [B] (`anchors.select_anchors`), and the n = 2
    reference anchors of every frame (`anchors.reference_anchors`).
  * the *person region* of a frame: its mask when masks are given; otherwise the init mesh's
    silhouette (the project's rasterizer, `imphmr_jax.render.rasterize.silhouette`) dilated by
    `optim.silhouette_dilation` pixels. Frames are composited on the GHN's background colour
    inside that region (`ghn.data.composite`), exactly as the GHN saw its training references.
  * the anchors' images composited that way and encoded once by 𝓕 (`GHN.encode`); the maps stay
    on the devices (replicated) and every step indexes them by reference id.
  * 𝒟 and W of every anchor and every frame at θ⁰, rendered by the GHN on a coarse pixel grid
    (every `matching.depth_stride` px), give the joint visibility 𝒱 (`joint_visibility`).
  * the registered joint features 𝒥 (`register_joint_features`) from the anchors' feature maps
    at their visible init joints.
  * joint matching [B: S Gaussian candidates]: S candidates around each frame's init joints are
    scored against 𝒥 on the frame's own feature map (`match_candidates`); the matched 2-D
    targets, the visibility and the match validity are FIXED for the whole optimisation
    (recomputing them from the current pose is possible; once keeps a step cheap and the loss
    stationary).

**Optimised** (`refine`): η of Φ^MLP. The pose of frame t is
`compose(MotionField(phase(t)), θ⁰_t)` (`motion_field`: exactly θ⁰ at step 0). One jitted optax
step takes `optim.batch_frames` random frames (sharded over the mesh's 'data' axis; the field's
parameters and the anchor maps replicated) and minimises

    λ_rgb·MSE(C, frame) + λ_sil·BCE(W, mask) + λ_jm·L_jm + λ_reg·L_reg

on `optim.rays_per_frame` random rays per frame (the GHN's own `sample_pixels`: a share
`optim.fraction_inside` inside the person region, the others uniform in its box grown by
`optim.dilation` px; the default 0 samples the box uniformly, i.e. its pixels' mean loss, since
inside-weighted rays reward a too large silhouette), the frame composited like the references
(`ghn.data.composite` on the sampled pixels); BCE only when masks are given;
L_jm on the visible, registered, validly matched joints (`matching_loss`, Geman–McClure on the
box-diagonal-normalised pixel residual); L_reg = `residual_regulariser`. The references are
rendered in the field's current pose at the anchor frames (stop-gradient;
`anchors.reference_pose = 'init'` keeps θ⁰). A step with a non-finite loss or gradient is skipped
and counted (`imphmr_jax.training.state.apply_gradients`). Frames are streamed: per step the
host reads only the batch's frames (and masks) from the accessor, so memory does not grow with T.
On the devices a step holds the batch's frames (B, H, W, 3) uint8 and masks, the A anchor maps and
the B·n reference maps gathered from them. After the loop the field is evaluated at every frame
in batches; a joint whose residual is exactly the identity keeps its θ⁰ bits (no matrix ->
axis-angle round trip), so zero steps return the init exactly. An optional temporal stabiliser
(`temporal_smoothing`, [B] as a post-process) averages the 6D rotations and translations over a
centred window. `objective` evaluates the minimised function on fixed rays (e.g. before / after).

The command line reads the frames lazily (`neuhmr_jax.data.video`), the initialisation with
`neuhmr_jax.data.inits.load_init`, refines at the working resolution `config.image_side`
(default: the GHN's training image size; K scaled with the frames) and writes `write_outputs`.

Why one module: the inputs, the prepared cues, the compiled step, the loop, the objective and the
command line share one private layout of a step's batch and of the anchors' bank (`_host_batch`,
`_bank`, `_compiled_step`); split, every part would reach into the others' internals.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smpl_jax
from imphmr_jax.cli import ConfigError, InputError, expand_path
from imphmr_jax.geometry import camera as cam_lib
from imphmr_jax.training import sharding
from imphmr_jax.training import state as state_lib
from neuhmr_jax import anchors as anchor_lib
from neuhmr_jax import joint_matching as jm
from neuhmr_jax import motion_field as mf_lib
from neuhmr_jax.data.inits import Init
from neuhmr_jax.ghn import data as ghn_data
from neuhmr_jax.ghn import rays as ray_lib
from neuhmr_jax.ghn.model import Camera, References
from neuhmr_jax.train_ghn import join_variables, split_variables
from smpl_jax.rotations import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d,
                                rot6d_to_matrix)

NUM_JOINTS = 24
BATCH_KEYS = ("frame", "phase", "image", "mask", "ref", "pose", "transl", "betas", "target", "weight",
              "diag")


# ------------------------------------------------------------------------------------- inputs
@dataclasses.dataclass(frozen=True)
class Video:
    """A monocular video to refine.

    Attributes:
      frames: any sequence of T frames: `len(frames)`, `frames[i]` -> (H, W, 3) uint8 RGB (e.g.
        `neuhmr_jax.data.video.Frames`, decoded on demand, or a (T, H, W, 3) array). Frames are
        read when needed, never all at once.
      K: (3, 3) intrinsics, pixels (pixel centres at +0.5).
      masks: optional sequence of T person masks: masks[i] -> (H, W) or (H, W, C) (bool: as is;
        float: > 0.5; integers: > 127 when the mask's maximum exceeds 1, else > 0).
    """

    frames: Any
    K: Any
    masks: Any = None
    _size: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        try:
            K = np.asarray(self.K, np.float64)
        except (TypeError, ValueError):
            raise InputError("video intrinsics K must be a 3x3 matrix of numbers") from None
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"video intrinsics K must be a finite 3x3 matrix with positive focal "
                             f"lengths, got {K.tolist() if K.size <= 9 else K.shape}")
        object.__setattr__(self, "K", K.astype(np.float32))
        n = len(self.frames)
        if n < 1:
            raise InputError("the video has no frames")
        if self.masks is not None and len(self.masks) != n:
            raise InputError(f"the video has {n} frames but {len(self.masks)} masks: give one mask "
                             "per frame")
        size = getattr(self.frames, "image_size", None) or np.shape(self.frames[0])[:2]
        object.__setattr__(self, "_size", tuple(int(v) for v in size))

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> tuple:
        """(H, W) pixels."""
        return self._size

    def image(self, i: int) -> np.ndarray:
        """Frame i, checked: (H, W, 3) uint8 of the video's size."""
        a = np.asarray(self.frames[int(i)])
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3 \
                or tuple(a.shape[:2]) != self.image_size:
            raise InputError(f"frame {int(i)} must be an (H, W, 3) uint8 image of "
                             f"{self.image_size}, got {a.dtype}{a.shape}")
        return a

    def mask(self, i: int) -> np.ndarray:
        """Mask i as (H, W) bool (see the class docstring for the thresholds)."""
        m = np.asarray(self.masks[int(i)])
        if m.ndim == 3:
            m = m.max(axis=-1)
        if m.shape != self.image_size:
            raise InputError(f"mask {int(i)} is {m.shape} but the frames are {self.image_size}")
        if m.dtype == bool:
            return m
        if np.issubdtype(m.dtype, np.integer):
            return m > (127 if m.max(initial=0) > 1 else 0)
        return m > 0.5


class _Resized:
    """frames[i] resized to (h, w) on read (bilinear for images, nearest for masks)."""

    def __init__(self, frames, size, nearest: bool):
        self.frames, self.image_size, self.nearest = frames, tuple(size), nearest
        self.names = getattr(frames, "names", None)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        from PIL import Image
        a = np.asarray(self.frames[i])
        if tuple(a.shape[:2]) == self.image_size:
            return a
        if self.nearest:
            m = a.max(axis=-1) if a.ndim == 3 else a
            m = (m > 0).astype(np.uint8) * 255 if m.dtype == bool else m
            return np.asarray(Image.fromarray(m).resize(self.image_size[::-1],
                                                        Image.Resampling.NEAREST))
        from imphmr_jax.figures import resize_image
        return resize_image(a, *self.image_size)


def working_video(video: Video, side: int) -> Video:
    """The video at its working resolution: the longer side `side` pixels (0: unchanged), K
    rescaled with the frames (the camera frame, hence every pose, is the same)."""
    if not side:
        return video
    h, w = video.image_size
    scale = float(side) / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return video
    intr = np.asarray(cam_lib.rescale_intrinsics(
        np.asarray(cam_lib.intrinsics_from_matrix(video.K)), (h, w), size))
    K = np.array([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1]], np.float32)
    masks = None if video.masks is None else _Resized(video.masks, size, nearest=True)
    return Video(_Resized(video.frames, size, nearest=False), K, masks)


def as_init(init, num_frames: Optional[int] = None) -> Init:
    """An `Init` (checked: shapes, finite values, one entry per frame) from an Init or anything
    with poses (T, 24, 3) / betas (T, 10) / transl (T, 3) attributes or keys."""
    if not isinstance(init, Init):
        get = (lambda k: init[k]) if isinstance(init, dict) else (lambda k: getattr(init, k))
        try:
            init = Init(get("poses"), get("betas"), get("transl"), source="init")
        except (KeyError, AttributeError) as e:
            raise InputError(f"the initialisation needs poses, betas and transl ({e})") from None
    return init.check_num_frames(num_frames)


def _fixed_betas(init: Init, mode: str) -> np.ndarray:
    """(T, NB) float32 β every frame is rendered with: the median over frames, or the init's."""
    if mode == "median":
        return np.broadcast_to(np.median(init.betas, axis=0).astype(np.float32),
                               init.betas.shape).copy()
    if mode == "per_frame":
        return init.betas.copy()
    raise ConfigError(f"config.betas must be 'median' or 'per_frame', got {mode!r}")


# ------------------------------------------------------------------------------------- clip
_forward_vertices = jax.jit(lambda body, p, b, t: smpl_jax.forward(body, p, b, t).vertices)


class _Clip:
    """Host-side access to the video's frames, masks (given or the init's dilated silhouettes)
    and composited images, by frame index."""

    def __init__(self, video: Video, init: Init, betas: np.ndarray, body, background,
                 silhouette_dilation: int):
        self.video, self.init, self.betas, self.body = video, init, betas, body
        self.background = tuple(background)
        self.dilation = int(silhouette_dilation)
        self.intr = np.asarray(cam_lib.intrinsics_from_matrix(video.K), np.float32)

    def images(self, idx) -> np.ndarray:
        return np.stack([self.video.image(i) for i in idx])

    def masks(self, idx) -> np.ndarray:
        """(B, H, W) bool: the masks, or the init mesh's silhouettes dilated by `dilation` px."""
        if self.video.masks is not None:
            return np.stack([self.video.mask(i) for i in idx])
        return self.silhouettes(idx)

    def silhouettes(self, idx) -> np.ndarray:
        from imphmr_jax.render import rasterize
        from scipy import ndimage
        idx = np.asarray(idx)
        verts = _forward_vertices(self.body, jnp.asarray(self.init.poses[idx]),
                                  jnp.asarray(self.betas[idx]), jnp.asarray(self.init.transl[idx]))
        h, w = self.video.image_size
        sil = np.asarray(rasterize.silhouette(verts, self.body.faces, self.intr, h, w,
                                              cull_backfaces=True)) > 0.5
        if self.dilation > 0:
            sil = ndimage.binary_dilation(sil, structure=np.ones((1, 3, 3), bool),
                                          iterations=self.dilation)
        return sil

    def composited(self, idx) -> np.ndarray:
        """(B, H, W, 3) float32 in [0, 1]: the person region on the GHN's background colour."""
        return ghn_data.composite(self.images(idx), self.masks(idx), self.background)


def _chunks(indices, size: int):
    """(padded chunk of `size` indices (the last repeated), count of real ones)."""
    indices = np.asarray(indices, np.int64)
    for s in range(0, len(indices), size):
        idx = indices[s:s + size]
        yield np.concatenate([idx, np.repeat(idx[-1:], size - len(idx))]), len(idx)


# ------------------------------------------------------------------------------------- prepare
@dataclasses.dataclass
class Prepared:
    """What `prepare` computes once (host numpy unless noted). T frames, A anchors, J = 24.

    betas: (T, NB) the β each frame is rendered with. anchors: (A,) anchor frames (sorted).
    refs: (T, n) reference anchor frames of every frame; ref_ids: (T, n) their rows in `anchors`.
    anchor_images: (A, H, W, 3) float32 composited anchor frames.
    anchor_features: (A, H/2, W/2, C) jax array, 𝓕 of anchor_images.
    anchor_visibility: (A, J) bool. visibility: (T, J) bool 𝒱 at θ⁰.
    registered: (J, C) 𝒥; is_registered: (J,) bool.
    targets: (T, J, 2) matched 2-D targets (pixels); scores: (T, J) best cosine;
    weights: (T, J) float32 = 𝒱 ∧ registered ∧ a candidate inside the image (L_jm's v_j).
    joints_px: (T, J, 2) projected init joints; diag: (T,) their box diagonal (pixels, >= 1).
    """

    betas: np.ndarray
    anchors: np.ndarray
    refs: np.ndarray
    ref_ids: np.ndarray
    anchor_images: np.ndarray
    anchor_features: Any
    anchor_visibility: np.ndarray
    visibility: np.ndarray
    registered: np.ndarray
    is_registered: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    joints_px: np.ndarray
    diag: np.ndarray


def _static_cameras(K, n: int):
    K = jnp.asarray(K, jnp.float32)
    eye = jnp.eye(3, dtype=jnp.float32)
    target = Camera(K, eye, jnp.zeros(3, jnp.float32))
    refs = Camera(jnp.broadcast_to(K, (n, 3, 3)), jnp.broadcast_to(eye, (n, 3, 3)),
                  jnp.zeros((n, 3), jnp.float32))
    return target, refs


def _grid(image_size, stride: int):
    """Pixel centres (P, 2) of a grid every `stride` px covering the image, and its (gh, gw)."""
    H, W = image_size
    gh, gw = max(H // stride, 1), max(W // stride, 1)
    rows, cols = np.meshgrid((np.arange(gh) + 0.5) * H / gh, (np.arange(gw) + 0.5) * W / gw,
                             indexing="ij")
    return np.stack([cols.ravel(), rows.ravel()], -1).astype(np.float32), (gh, gw)


# The GHN is a static argument (hashed by identity): repeated `prepare` calls with one GHN reuse
# the compiled functions.
@functools.partial(jax.jit, static_argnames=("ghn", "image_size", "grid_size", "tau",
                                             "min_occupancy"))
def _cues(ghn, variables, K, grid, features, ref_pose, ref_transl, pose, betas, transl, *,
          image_size, grid_size, tau, min_occupancy):
    """Init joints (B, J, 3), their pixels (B, J, 2) and 𝒱 (B, J) of B frames, from the GHN's 𝒟
    and W rendered at `grid` (P, 2) pixel centres forming a (gh, gw) = grid_size grid.

    features (B, n, h, w, C), ref_pose (B, n, 24, 3), ref_transl (B, n, 3): each frame's
    references; pose (B, 24, 3), betas (B, NB), transl (B, 3): the frames' init."""
    gh, gw = grid_size
    H, W = image_size
    cam, ref_cams = _static_cameras(K, features.shape[1])
    # the grid's cells are the pixels of a (gh, gw) image of the same camera
    grid_intr = cam_lib.rescale_intrinsics(cam_lib.intrinsics_from_matrix(K), (H, W), (gh, gw))
    weights = ghn.skinning_weights(variables)

    def maps(f, rp, rt, p, b, t):
        refs = References(None, ref_cams, rp, rt, f)
        out = ghn.render(variables, cam, p, b, refs, grid, transl=t, weights=weights,
                         image_size=image_size)
        return out.depth.reshape(gh, gw), out.occupancy.reshape(gh, gw)

    depth, occ = jax.vmap(maps)(features, ref_pose, ref_transl, pose, betas, transl)
    joints = smpl_jax.forward(ghn.body, pose, betas, transl,
                              return_vertices=False).joints[:, :NUM_JOINTS]
    px, _ = jm.project(joints, K)
    vis = jax.vmap(lambda j, d, o: jm.joint_visibility(j, grid_intr, d, o, tau, min_occupancy))(
        joints, depth, occ)
    return joints, px, vis


@functools.partial(jax.jit, static_argnames=("image_size", "sigma", "num_candidates",
                                             "temperature", "soft"))
def _match(K, features, joints, frames, registered, key, *, image_size, sigma, num_candidates,
           temperature, soft):
    """`jm.Match` of B frames: S candidates around each init joint (key folded with the frame
    index) scored against 𝒥 on the frame's feature map (B, h, w, C)."""
    def one(f, j, t):
        cand = jm.joint_candidates(jax.random.fold_in(key, t), j, sigma, num_candidates)
        px, z = jm.project(cand, K)
        return jm.match_candidates(f, px, registered, image_size, temperature, soft, z)
    return jax.vmap(one)(features, joints, frames)


_encode = jax.jit(lambda ghn, variables, images: ghn.encode(variables, images),
                  static_argnums=0)


def prepare(ghn, variables, video: Video, init, config, *, key=None,
            progress: bool = False) -> Prepared:
    """The fixed cues of the refinement (module docstring): β, anchors and references, the
    anchors' feature maps, 𝒱, 𝒥 and the matched joint targets. No gradients.

    Args:
      ghn, variables: the frozen GHN (`train_ghn.load_ghn`).
      video: a `Video` (already at its working resolution: `working_video`).
      init: an `Init` (or poses/betas/transl, see `as_init`), camera frame.
      config: `neuhmr_jax.config.optimize_config()`.
      key: PRNG key of the Gaussian candidates (default: from config.optim.seed).
    Returns:
      `Prepared`.
    """
    init = as_init(init, video.num_frames)
    if key is None:
        key = jax.random.fold_in(jax.random.PRNGKey(config.optim.seed), 1)
    T, (H, W) = video.num_frames, video.image_size
    a, m = config.anchors, config.matching
    betas = _fixed_betas(init, config.betas)
    clip = _Clip(video, init, betas, ghn.body, ghn.config.background,
                 config.optim.silhouette_dilation)
    anchors = anchor_lib.select_anchors(init.poses, a.num_anchors, a.every)
    refs = anchor_lib.reference_anchors(init.poses, anchors, a.n_refs, a.facing_angle_deg)
    ref_ids = np.searchsorted(anchors, refs).astype(np.int32)
    chunk = int(config.optim.batch_frames)
    K = jnp.asarray(video.K)
    grid, grid_size = _grid((H, W), int(m.depth_stride))
    grid = jnp.asarray(grid)
    bar = _bar(progress, len(anchors) + T, "prepare")

    anchor_images = clip.composited(anchors)
    feats = []
    for idx, count in _chunks(np.arange(len(anchors)), chunk):
        feats.append(_encode(ghn, variables, jnp.asarray(anchor_images[idx]))[:count])
    anchor_features = jnp.concatenate(feats)

    def frame_cues(idx):
        r = ref_ids[idx]
        return _cues(ghn, variables, K, grid, anchor_features[r],
                     jnp.asarray(init.poses[anchors[r]]), jnp.asarray(init.transl[anchors[r]]),
                     jnp.asarray(init.poses[idx]), jnp.asarray(betas[idx]),
                     jnp.asarray(init.transl[idx]), image_size=(H, W), grid_size=grid_size,
                     tau=float(m.tau), min_occupancy=float(m.min_occupancy))

    px_a, vis_a = [], []
    for idx, count in _chunks(anchors, chunk):
        _, px, vis = frame_cues(idx)
        px_a.append(np.asarray(px)[:count])
        vis_a.append(np.asarray(vis)[:count])
        _tick(bar, count)
    px_a, vis_a = np.concatenate(px_a), np.concatenate(vis_a)
    registered, is_registered = jm.register_joint_features(anchor_features, px_a, vis_a, (H, W))

    out = {k: [] for k in ("vis", "px", "target", "score", "valid")}
    for idx, count in _chunks(np.arange(T), chunk):
        features = _encode(ghn, variables, jnp.asarray(clip.composited(idx)))
        joints, px, vis = frame_cues(idx)
        mt = _match(K, features, joints, jnp.asarray(idx, jnp.int32), registered, key,
                    image_size=(H, W), sigma=float(m.sigma), num_candidates=int(m.num_candidates),
                    temperature=float(m.temperature), soft=bool(m.soft))
        for k, v in (("vis", vis), ("px", px), ("target", mt.target_px), ("score", mt.score),
                     ("valid", mt.valid)):
            out[k].append(np.asarray(v)[:count])
        _tick(bar, count)
    if bar is not None:
        bar.close()
    out = {k: np.concatenate(v) for k, v in out.items()}
    is_registered = np.asarray(is_registered)
    weights = (out["vis"] & is_registered[None] & out["valid"]).astype(np.float32)
    px = out["px"]
    diag = np.maximum(np.linalg.norm(px.max(1) - px.min(1), axis=-1), 1.0).astype(np.float32)
    return Prepared(betas=betas, anchors=anchors, refs=refs, ref_ids=ref_ids,
                    anchor_images=anchor_images, anchor_features=anchor_features,
                    anchor_visibility=vis_a, visibility=out["vis"],
                    registered=np.asarray(registered), is_registered=is_registered,
                    targets=np.where(weights[..., None] > 0, out["target"], px).astype(np.float32),
                    scores=out["score"], weights=weights, joints_px=px, diag=diag)


# ------------------------------------------------------------------------------------- refine
class Result(NamedTuple):
    """poses (T, 24, 3) axis-angle, camera frame; transl (T, 3); betas (T, NB) (the fixed β);
    history {term: (steps,) float}: loss, rgb, [occupancy], joint_matching, regulariser,
    grad_norm, finite; nonfinite_steps: skipped steps; prepared: the `Prepared` cues (None with
    zero steps); params: the field's final parameters η (numpy; `evaluate_field`, `objective`)."""

    poses: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    history: dict
    nonfinite_steps: int = 0
    prepared: Optional[Prepared] = None
    params: Any = None


def motion_field(config) -> mf_lib.MotionField:
    """Φ^MLP of config.motion_field."""
    m = config.motion_field
    return mf_lib.MotionField(hidden=int(m.hidden), depth=int(m.depth),
                              fourier_octaves=int(m.fourier_octaves),
                              head_gain=float(m.head_gain))


def make_optimizer(learning_rate: float, weight_decay: float = 0.0, grad_clip: float = 0.0,
                   ghn_learning_rate: Optional[float] = None) -> optax.GradientTransformation:
    """Adam on the field's parameters 'motion' (AdamW with weight_decay > 0, global-norm
    clipping with grad_clip > 0); with ghn_learning_rate (fine-tuning), the same at that rate on
    the GHN's parameters 'ghn'."""
    def adam(lr):
        tx = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
        return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip else tx

    rates = {"motion": adam(learning_rate)}
    if ghn_learning_rate is not None:
        rates["ghn"] = adam(ghn_learning_rate)
    return optax.multi_transform(rates, lambda p: {k: jax.tree.map(lambda _: k, v)
                                                   for k, v in p.items()})


def _step_options(config) -> tuple:
    """The config values the step depends on (hashable: the key of the compiled step)."""
    o, lo, a, m = config.optim, config.loss, config.anchors, config.motion_field
    if a.reference_pose not in ("current", "init"):
        raise ConfigError(f"anchors.reference_pose must be 'current' or 'init', got "
                          f"{a.reference_pose!r}")
    return (float(o.learning_rate), float(o.weight_decay), float(o.grad_clip),
            int(o.rays_per_frame), float(o.fraction_inside), int(o.dilation),
            float(lo.rgb), float(lo.occupancy), float(lo.joint_matching), float(lo.regulariser),
            float(config.matching.gm_scale), int(a.n_refs), str(a.reference_pose),
            int(m.hidden), int(m.depth), int(m.fourier_octaves), float(m.head_gain),
            bool(config.finetune_ghn), float(config.ghn_learning_rate))


@functools.lru_cache(maxsize=4)
def _compiled_step(ghn, options: tuple, mesh, with_masks: bool):
    """(field, tx, step, loss) for a GHN, the step's config values (`_step_options`), a mesh and
    whether masks are given; cached, so refining several clips reuses one compiled step.

    step(state, batch, bank, ghn_vars) -> (state, metrics), state donated; batch sharded over
    'data' (`BATCH_KEYS`), the rest replicated. bank (the anchors and the camera): K (3, 3),
    frame (A,), phase (A,), pose (A, 24, 3), transl (A, 3), and features (A, h, w, C), or
    images (A, H, W, 3) when fine-tuning the GHN (whose 𝓕 then changes). ghn_vars: the GHN's
    variables (frozen), or its fixed part when fine-tuning. loss(params, batch, bank, ghn_vars,
    key) -> (loss, terms): the objective alone (jitted, unsharded)."""
    (lr, wd, clip, n_rays, frac, dil, w_rgb, w_occ, w_jm, w_reg, gm_scale, n_refs, ref_pose,
     hidden, depth, octaves, head_gain, finetune, ghn_lr) = options
    field = mf_lib.MotionField(hidden=hidden, depth=depth, fourier_octaves=octaves,
                               head_gain=head_gain)
    tx = make_optimizer(lr, wd, clip, ghn_lr if finetune else None)
    bg = jnp.asarray(ghn.config.background, jnp.float32)

    def losses(params, batch, bank, ghn_vars, key):
        variables = join_variables(params["ghn"], ghn_vars) if finetune else ghn_vars
        weights = ghn.skinning_weights(variables)
        image_size = batch["image"].shape[1:3]
        K = bank["K"]
        cam, ref_cams = _static_cameras(K, n_refs)
        res_R, res_T = field.apply(params["motion"], batch["phase"])
        rot, transl = mf_lib.compose(res_R, res_T, batch["pose"], batch["transl"])
        if ref_pose == "current":
            ra, ta = field.apply(params["motion"], bank["phase"])
            ref_rot, ref_tr = jax.lax.stop_gradient(
                mf_lib.compose(ra, ta, bank["pose"], bank["transl"]))
        else:
            ref_rot, ref_tr = axis_angle_to_matrix(bank["pose"]), bank["transl"]
        features = ghn.encode(variables, bank["images"]) if finetune else bank["features"]

        def one(x, rot_b, tr_b):
            k_rays, k_render = jax.random.split(jax.random.fold_in(key, x["frame"]))
            pixels = ray_lib.sample_pixels(k_rays, x["mask"], n_rays, fraction_inside=frac,
                                           box_dilation=dil)
            r = x["ref"]
            refs = References(None, ref_cams, ref_rot[r], ref_tr[r], features[r])
            out = ghn.render(variables, cam, rot_b, x["betas"], refs, pixels, transl=tr_b,
                             key=k_render, weights=weights, image_size=image_size)
            m = ghn_data.gather_pixels(x["mask"][..., None], pixels)[:, 0].astype(jnp.float32)
            # ghn.data.composite on the sampled pixels only (the frame stays uint8 on device)
            img = ghn_data.gather_pixels(x["image"], pixels).astype(jnp.float32) / 255.0
            target = img * m[:, None] + bg * (1.0 - m[:, None])
            w = jnp.clip(out.occupancy, 1e-5, 1 - 1e-5)
            return (jnp.mean((out.rgb - target) ** 2),
                    -jnp.mean(m * jnp.log(w) + (1 - m) * jnp.log1p(-w)))

        mse, bce = jax.vmap(one)(batch, rot, transl)
        joints = smpl_jax.forward(ghn.body, rot, batch["betas"], transl,
                                  return_vertices=False).joints[:, :NUM_JOINTS]
        px, _ = jm.project(joints, K)
        terms = {"rgb": jnp.mean(mse),
                 "joint_matching": jm.matching_loss(px, batch["target"], batch["weight"],
                                                    batch["diag"], gm_scale),
                 "regulariser": mf_lib.residual_regulariser(res_R, res_T)}
        loss = w_rgb * terms["rgb"] + w_jm * terms["joint_matching"] + w_reg * terms["regulariser"]
        if with_masks:
            terms["occupancy"] = jnp.mean(bce)
            loss = loss + w_occ * terms["occupancy"]
        return loss, terms

    def step_fn(state, batch, bank, ghn_vars):
        (loss, terms), grads = jax.value_and_grad(losses, has_aux=True)(
            state.params, batch, bank, ghn_vars, state.step_key())
        new_state, guard = state_lib.apply_gradients(state, tx, grads, loss, state.batch_stats)
        return new_state, dict(terms, loss=loss, **guard)

    rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    step = jax.jit(step_fn, in_shardings=(rep, data, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))
    return field, tx, step, jax.jit(losses)


def _init_state(field, ghn_params, tx, mesh, key):
    """TrainState of the field (and the GHN's trainable part when fine-tuning), replicated.
    The field's trunk is drawn from `key`; its heads start at zero (the identity)."""
    if jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)

    def init():
        k_init, k_rng = jax.random.split(key)
        params = {"motion": field.init(k_init, jnp.zeros((1,), jnp.float32))}
        if ghn_params is not None:
            params["ghn"] = ghn_params
        return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                                    opt_state=tx.init(params), rng=k_rng,
                                    nonfinite_total=jnp.zeros((), jnp.int32),
                                    nonfinite_streak=jnp.zeros((), jnp.int32))

    return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def evaluate_field(field, params, init: Init, batch: int = 64):
    """The refined motion at every frame: (poses (T, 24, 3), transl (T, 3)) float32.

    Batches of `batch` frames. A joint whose residual R' is exactly the identity keeps θ⁰'s bits
    (R'·R⁰ = R⁰ is not round-tripped through a matrix), and transl⁰ + 0 = transl⁰, so an
    untrained field returns the init exactly."""
    T = init.num_frames

    @jax.jit
    def at(params, frames, pose0, transl0):
        res_R, res_T = field.apply(params, mf_lib.phase(frames, T))
        rot, transl = mf_lib.compose(res_R, res_T, pose0, transl0)
        same = jnp.all(res_R == jnp.eye(3, dtype=res_R.dtype), axis=(-2, -1))
        return jnp.where(same[..., None], pose0, matrix_to_axis_angle(rot)), transl

    poses, transl = [], []
    for idx, count in _chunks(np.arange(T), min(int(batch), T)):
        p, t = at(params, jnp.asarray(idx, jnp.int32), jnp.asarray(init.poses[idx]),
                  jnp.asarray(init.transl[idx]))
        poses.append(np.asarray(p)[:count])
        transl.append(np.asarray(t)[:count])
    return np.concatenate(poses).astype(np.float32), np.concatenate(transl).astype(np.float32)


def smooth_motion(poses, transl, window: int):
    """The temporal stabiliser: centred moving average over `window` frames (truncated at the
    ends) of the 6D rotations (re-orthonormalised by Gram–Schmidt) and the translations.

    Args:
      poses: (T, 24, 3) axis-angle. transl: (T, 3). window: frames; <= 1 returns the inputs.
    Returns:
      (poses, transl) float32.
    """
    if int(window) <= 1:
        return poses, transl
    half_lo, half_hi = (int(window) - 1) // 2, int(window) // 2

    def average(x):
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
        idx = np.arange(x.shape[0])
        lo, hi = np.maximum(idx - half_lo, 0), np.minimum(idx + half_hi + 1, x.shape[0])
        return (c[hi] - c[lo]) / (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))

    r6 = np.asarray(matrix_to_rot6d(axis_angle_to_matrix(jnp.asarray(poses))), np.float64)
    out = matrix_to_axis_angle(rot6d_to_matrix(jnp.asarray(average(r6), jnp.float32)))
    return np.asarray(out, np.float32), average(np.asarray(transl, np.float64)).astype(np.float32)


def refine(ghn, variables, video: Video, init, config, *, key=None, mesh=None,
           progress: bool = True, prepared: Optional[Prepared] = None) -> Result:
    """Refine the init's motion against the frozen GHN (module docstring).

    Args:
      ghn, variables: the GHN (`train_ghn.load_ghn` / `build_ghn` + `GHN.init`).
      video: a `Video` (frames, K, optional masks), at the working resolution (the CLI applies
        `working_video(video, config.image_side)`).
      init: an `Init` (or anything with poses / betas / transl, `as_init`), camera frame.
      config: `neuhmr_jax.config.optimize_config()`.
      key: PRNG key (default PRNGKey(config.optim.seed)): the field's initial trunk, the rays,
        the samples' jitter and the joint candidates.
      mesh: device mesh (default: all devices, `sharding.make_mesh`); optim.batch_frames must be
        divisible by its size.
      progress: progress bars (and config.optim.progress).
      prepared: `prepare`'s output for this video and init, to reuse it.
    Returns:
      `Result`. Zero steps return the init's poses and transl exactly (and the fixed β).
    Raises:
      InputError: inputs that do not fit (frame counts, NaN, shapes), naming them.
      ConfigError: a batch the mesh cannot split, an unknown option.
      NonFiniteError: optim.nan_max_consecutive non-finite steps in a row.
    """
    init = as_init(init, video.num_frames)
    o = config.optim
    betas = _fixed_betas(init, config.betas)
    key = jax.random.PRNGKey(o.seed) if key is None else key
    k_field, k_prep = jax.random.split(key)
    mesh = sharding.make_mesh() if mesh is None else mesh
    B = int(o.batch_frames)
    if B < 1 or B % mesh.devices.size:
        raise ConfigError(f"optim.batch_frames {B} must be a positive multiple of the "
                          f"{mesh.devices.size} devices of the mesh")
    if prepared is not None and len(prepared.betas) != video.num_frames:
        raise InputError(f"the prepared cues are for {len(prepared.betas)} frames but the video "
                         f"has {video.num_frames}")
    field, tx, step, _ = _compiled_step(ghn, _step_options(config), mesh,
                                        video.masks is not None)
    finetune = bool(config.finetune_ghn)
    ghn_params, ghn_fixed = split_variables(variables) if finetune else (None, variables)
    state = _init_state(field, ghn_params, tx, mesh, k_field)
    history: dict = {}
    if int(o.steps) > 0:
        prepared = prepared or prepare(ghn, variables, video, init, config, key=k_prep,
                                       progress=progress and o.progress)
        state, history = _optimise(step, ghn, config, mesh, state, video, init, prepared,
                                   ghn_fixed, progress and o.progress)
    params = jax.device_get(state.params)
    poses, transl = evaluate_field(field, params["motion"], init, o.eval_batch)
    poses, transl = smooth_motion(poses, transl, config.temporal_smoothing)
    return Result(poses=poses, transl=transl, betas=betas, history=history,
                  nonfinite_steps=int(jax.device_get(state.nonfinite_total)), prepared=prepared,
                  params=params["motion"])


def _optimise(step, ghn, config, mesh, state, video, init, prep, ghn_fixed, progress):
    o = config.optim
    T, B = video.num_frames, int(o.batch_frames)
    rep = sharding.replicated(mesh)
    bank = jax.device_put(_bank(video, init, prep, config.finetune_ghn), rep)
    ghn_fixed = jax.device_put(ghn_fixed, rep)
    clip = _Clip(video, init, prep.betas, ghn.body, ghn.config.background, o.silhouette_dilation)

    def host_batch(s):
        idx = np.random.default_rng((int(o.seed), s)).choice(T, B, replace=B > T)
        return _host_batch(clip, prep, idx)

    history: dict = {}
    bar = _bar(progress, int(o.steps), "refine")

    def record(s, metrics):
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        for k, v in m.items():
            history.setdefault(k, []).append(v)
        if bar is not None:
            bar.update(1)
            if (s + 1) % max(int(o.log_every), 1) == 0:
                bar.set_postfix(loss=f"{m['loss']:.4g}")
        if m["nonfinite_streak"] >= o.nan_max_consecutive:
            raise state_lib.NonFiniteError(
                f"{int(m['nonfinite_streak'])} consecutive refinement steps had a non-finite "
                f"loss or gradient (step {s}); lower optim.learning_rate or set optim.grad_clip")

    # Step s runs on the devices while the host reads the frames of step s + 1.
    pending = None
    try:
        for s in range(int(o.steps)):
            batch = sharding.global_batch(host_batch(s), mesh, BATCH_KEYS)
            state, metrics = step(state, batch, bank, ghn_fixed)
            if pending is not None:
                record(*pending)
            pending = (s, metrics)
        if pending is not None:
            record(*pending)
    finally:
        if bar is not None:
            bar.close()
    history = {k: np.asarray(v, np.float32) for k, v in history.items()
               if k != "nonfinite_streak"}
    return state, history


def _phases(num_frames: int) -> np.ndarray:
    return np.asarray(mf_lib.phase(np.arange(num_frames), num_frames), np.float32)


def _bank(video: Video, init: Init, prep: Prepared, finetune: bool) -> dict:
    """The anchors' data every step reads (replicated; see `_compiled_step`)."""
    bank = {"K": video.K, "frame": np.asarray(prep.anchors, np.int32),
            "phase": _phases(video.num_frames)[prep.anchors], "pose": init.poses[prep.anchors],
            "transl": init.transl[prep.anchors]}
    if finetune:
        bank["images"] = prep.anchor_images
    else:
        bank["features"] = np.asarray(prep.anchor_features)
    return bank


def _host_batch(clip: _Clip, prep: Prepared, idx) -> dict:
    """The step's inputs (`BATCH_KEYS`) of frames `idx`, read on the host."""
    idx = np.asarray(idx)
    init = clip.init
    return {"frame": idx.astype(np.int32), "phase": _phases(len(init))[idx],
            "image": clip.images(idx), "mask": clip.masks(idx), "ref": prep.ref_ids[idx],
            "pose": init.poses[idx], "transl": init.transl[idx], "betas": prep.betas[idx],
            "target": prep.targets[idx], "weight": prep.weights[idx], "diag": prep.diag[idx]}


def objective(ghn, variables, video: Video, init, config, prepared: Prepared, *, params=None,
              key=None, frames=None, repeats: int = 1, mesh=None) -> dict:
    """The refinement objective of a field on fixed rays: {term: float} (loss, rgb,
    [occupancy], joint_matching, regulariser).

    The same compiled step that `refine` runs, with the update thrown away: the terms are those
    of `params` on the rays of keys fold_in(key, r), r < repeats (default key PRNGKey(0)),
    averaged over `frames` (default: all) in batches of optim.batch_frames and over the repeats.
    params: the field's η (`Result.params`); None = a field at its initialisation, i.e. the
    init's motion (exactly, with motion_field.head_gain = 0). So objective(params=result.params)
    < objective(params=None) says the refinement lowered what it minimises. With finetune_ghn,
    `variables` are the GHN's being evaluated. A last batch shorter than optim.batch_frames is
    padded with its last frame, which then weighs a little more in the ratio term L_jm.
    """
    init = as_init(init, video.num_frames)
    mesh = sharding.make_mesh() if mesh is None else mesh
    finetune = bool(config.finetune_ghn)
    field, tx, step, _ = _compiled_step(ghn, _step_options(config), mesh,
                                        video.masks is not None)
    key = jax.random.PRNGKey(0) if key is None else key
    base = _init_state(field, split_variables(variables)[0] if finetune else None, tx, mesh,
                       jax.random.PRNGKey(0))
    if params is not None:
        base = base.replace(params=dict(base.params, motion=params))
    ghn_fixed = split_variables(variables)[1] if finetune else variables
    rep = sharding.replicated(mesh)
    bank = jax.device_put(_bank(video, init, prepared, finetune), rep)
    ghn_fixed = jax.device_put(ghn_fixed, rep)
    clip = _Clip(video, init, prepared.betas, ghn.body, ghn.config.background,
                 config.optim.silhouette_dilation)
    frames = np.arange(video.num_frames) if frames is None else np.asarray(frames)
    totals: dict = {}
    count = 0
    for idx, n in _chunks(frames, int(config.optim.batch_frames)):
        batch = sharding.global_batch(_host_batch(clip, prepared, idx), mesh, BATCH_KEYS)
        for r in range(int(repeats)):
            # step_key() = fold_in(rng, step): the rays of key r. A fresh copy: the step
            # donates (deletes) the state it is given.
            state = jax.device_put(jax.tree.map(
                lambda x: jnp.array(x, copy=True),
                base.replace(rng=jnp.asarray(key), step=jnp.int32(r))), rep)
            _, metrics = step(state, batch, bank, ghn_fixed)
            # the terms are means over the batch, padding included: weighted by real frames
            for k, v in jax.device_get(metrics).items():
                if k not in ("grad_norm", "finite", "nonfinite_streak"):
                    totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n * int(repeats)
    return {k: v / count for k, v in totals.items()}


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from imphmr_jax.training.writer import progress_bar
    return progress_bar(total, desc=desc)


def _tick(bar, n: int) -> None:
    if bar is not None:
        bar.update(n)


# ------------------------------------------------------------------------------------- outputs
def write_outputs(workdir: str, video: Video, init: Init, result: Result, body, *,
                  overlay: bool = True, overlay_side: int = 512, sheet_frames: int = 8,
                  fps: Optional[float] = None, config=None) -> dict:
    """Write the refinement's results into `workdir`; returns {what: path} (what: the file
    names below, 'overlay' for the video).

      refined.npz    poses (T, 24, 3), betas (T, 10), transl (T, 3), num_frames, source
                     (`neuhmr_jax.data.inits.load_npz` reads it back)
      frames/%06d.json   per frame: frame, name, poses (24 x 3), betas, transl
      history.json   the loss terms per step; config.json (when given)
      overlay.mp4    before | after meshes over every frame (`figures.full_image_overlay`;
                     .gif where mp4 cannot be encoded), with overlay=True
      sheet.png      a contact sheet of `sheet_frames` frames, before and after

    Everything is written under a temporary name in `workdir` first and renamed into place at the
    end, so an error leaves what the workdir held before untouched.
    """
    from imphmr_jax import figures
    from neuhmr_jax.data.video import write_video

    os.makedirs(workdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".optimize-", dir=workdir)
    T = video.num_frames
    names = getattr(video.frames, "names", None) or [f"{i:06d}" for i in range(T)]
    written = {}
    try:
        np.savez(os.path.join(tmp, "refined.npz"), poses=result.poses, betas=result.betas,
                 transl=result.transl, num_frames=np.asarray(T),
                 source=np.asarray(f"NeuHMR refinement of {init.source}"))
        written["refined.npz"] = "refined.npz"
        os.makedirs(os.path.join(tmp, "frames"))
        for i in range(T):
            with open(os.path.join(tmp, "frames", f"{i:06d}.json"), "w") as f:
                json.dump({"frame": i, "name": str(names[i]),
                           "poses": result.poses[i].tolist(), "betas": result.betas[i].tolist(),
                           "transl": result.transl[i].tolist()}, f)
        written["frames"] = "frames"
        with open(os.path.join(tmp, "history.json"), "w") as f:
            json.dump({k: np.asarray(v).tolist() for k, v in result.history.items()}
                      | {"nonfinite_steps": int(result.nonfinite_steps)}, f)
        written["history.json"] = "history.json"
        if config is not None:
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2))
            written["config.json"] = "config.json"
        intr = np.asarray(cam_lib.intrinsics_from_matrix(video.K), np.float32)
        faces = np.asarray(body.faces)

        def pair(i):
            image = video.image(i)
            before = _vertices(body, init.poses[i], init.betas[i], init.transl[i])
            after = _vertices(body, result.poses[i], result.betas[i], result.transl[i])
            kw = dict(min_side=overlay_side, max_side=max(overlay_side, 1))
            return (figures.full_image_overlay(image, before, faces, intr, **kw),
                    figures.full_image_overlay(image, after, faces, intr, **kw))

        if overlay:
            path = write_video(os.path.join(tmp, "overlay.mp4"),
                               (np.concatenate(pair(i), axis=1) for i in range(T)),
                               fps=fps or 30.0)
            written["overlay"] = os.path.basename(path)
        shown = np.unique(np.linspace(0, T - 1, min(int(sheet_frames), T)).round().astype(int))
        tiles, labels = [], []
        for i in shown:
            b, a = pair(int(i))
            tiles += [b, a]
            labels += [f"frame {i}: init", f"frame {i}: refined"]
        figures.labelled_sheet(tiles, labels, os.path.join(tmp, "sheet.png"), ncols=4)
        written["sheet.png"] = "sheet.png"
        for name in written.values():
            dst, src = os.path.join(workdir, name), os.path.join(tmp, name)
            if os.path.isdir(dst) and not os.path.islink(dst):
                old = os.path.join(tmp, ".old-" + name)
                os.rename(dst, old)
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: os.path.join(workdir, v) for k, v in written.items()}


def _vertices(body, pose, betas, transl) -> np.ndarray:
    return np.asarray(_forward_vertices(body, jnp.asarray(pose, jnp.float32)[None],
                                        jnp.asarray(betas, jnp.float32)[None],
                                        jnp.asarray(transl, jnp.float32)[None])[0])


# ------------------------------------------------------------------------------------- CLI
def optimize_video(config, *, video: str, init: str, intrinsics: str, workdir: str,
                   masks: Optional[str] = None, ghn: Optional[str] = None, overlay: bool = True,
                   overlay_side: int = 512, progress: bool = True) -> dict:
    """The command line's work: check every input, refine at the working resolution
    (config.image_side), write the outputs at the video's own (`write_outputs`). Nothing is
    written before the inputs (video, masks, intrinsics, GHN run, initialisation, workdir) have
    been read and checked."""
    from neuhmr_jax.data.inits import load_init
    from neuhmr_jax.data.video import parse_intrinsics, read_frames
    from neuhmr_jax.train_ghn import load_ghn

    workdir = expand_path(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise InputError(f"--workdir {workdir} exists and is not a folder")
    K = parse_intrinsics(intrinsics)
    frames = read_frames(video)
    mask_frames = None
    if masks:
        mask_frames = read_frames(masks)
        if len(mask_frames) != len(frames):
            raise InputError(f"--masks {mask_frames.path} holds {len(mask_frames)} masks but the "
                             f"video has {len(frames)} frames")
        if tuple(mask_frames.image_size) != tuple(frames.image_size):
            raise InputError(f"--masks {mask_frames.path}: masks are {mask_frames.image_size} but "
                             f"the frames are {frames.image_size} (height, width)")
    clip = Video(frames, K, mask_frames)
    ghn_dir = expand_path(ghn or config.ghn_workdir)
    # The init is checked (against the GHN's body, which HybrIK results need) before the GHN's
    # checkpoint is loaded.
    start = load_init(init, len(frames), body=_ghn_body(ghn_dir), frames=frames, K=K,
                      progress=progress)
    ghn_model, variables, ghn_config = load_ghn(ghn_dir, config.ghn_checkpoint)
    side = config.image_side
    if side is None:
        side = (ghn_config.data.get("image_size") if ghn_config is not None
                and "data" in ghn_config else None) or 0
    work = working_video(clip, int(side))
    result = refine(ghn_model, variables, work, start, config, progress=progress)
    return write_outputs(workdir, clip, start, result, ghn_model.body, overlay=overlay,
                         overlay_side=overlay_side, fps=getattr(frames, "fps", None),
                         config=config)


def _ghn_body(ghn_dir: str):
    """The body model of a `train_ghn` run, from its config.json alone."""
    import ml_collections
    path = os.path.join(ghn_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{ghn_dir} is not a GHN training run (no config.json): give "
                                "--ghn, a `python -m neuhmr_jax.train_ghn` workdir")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return smpl_jax.load(config.body.model, num_betas=config.body.num_betas)


def main(argv):
    del argv
    from absl import flags
    from imphmr_jax.training import startup
    startup.quiet_logs()
    f = flags.FLAGS
    written = optimize_video(f.config, video=f.video, init=f.init, intrinsics=f.intrinsics,
                             workdir=f.workdir, masks=f.masks, ghn=f.ghn, overlay=f.overlay,
                             overlay_side=f.overlay_side)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _define_flags():
    from absl import flags
    from ml_collections import config_flags
    from imphmr_jax import cli
    from neuhmr_jax.config import optimize_config
    config = optimize_config()
    cli.check_argv_overrides("config", config)
    config_flags.DEFINE_config_dict("config", config, "refinement config (--config.optim.steps=...)")
    flags.DEFINE_string("video", None, "a folder of frames or a video file")
    flags.DEFINE_string("init", None, "per-frame SMPL: .npz (poses, betas, transl), a folder of "
                        "HybrIK %06d.pkl, an ImpHMR workdir or converted weights")
    flags.DEFINE_string("intrinsics", None, "fx,fy,cx,cy or a .txt / .json / .npy file")
    flags.DEFINE_string("workdir", None, "output folder")
    flags.DEFINE_string("masks", None, "optional folder of person masks, one per frame")
    flags.DEFINE_string("ghn", None, "a train_ghn workdir (default: config.ghn_workdir)")
    flags.DEFINE_bool("overlay", True, "write the before/after overlay video")
    flags.DEFINE_integer("overlay_side", 512, "longer side of the overlay video's halves, px")


if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run_absl(main, required=("video", "init", "intrinsics", "workdir"),
                 define_flags=_define_flags)
