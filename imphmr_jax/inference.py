"""ImpHMR on arbitrary images: crops from person boxes, one jitted batched forward, the camera in
the full image's frame, and the model built from a trained run or converted weights.

    loaded = load_model(workdir="out/default/train")          # or weights="spin.npz", config=...
    pred = predict_image(loaded.model, loaded.variables, image, box, body=loaded.body,
                         config=loaded.config)
    pred.vertices_cam        # (V, 3) metres in the photo's camera frame
    pred.smplx_params()      # {'global_orient', 'body_pose', 'betas', 'transl'} for smplx

    predictor = Predictor.from_loaded(loaded, batch_size=16)   # many crops, one compiled forward
    preds = predictor.predict(frames, boxes)                   # e.g. one box per video frame

Crops (the evaluation crop of `imphmr_jax.data.augment.process_record`, no augmentation): a box
[x0, y0, x1, y1] in pixels becomes SPIN's square crop centred on the box with side
1.2·max(width, height) (`BOX_RESCALE`); without a box the crop is the whole image, centred, side
max(H, W) (no enlargement). Pixels outside the photo are black, as in training. A crop that
shrinks the photo by 2x or more first reduces it by 2, 4 or 8 with a box filter, like the
training pipeline's JPEG draft decoding, so that large photos are not aliased.

Cameras (frames as `imphmr_jax.geometry.camera`: x right, y down, z forward, metres; pixel centres
at +0.5). The model predicts SPIN's weak-perspective crop camera [s, tx, ty]: a body point X lands
at s·(X_xy + t_xy) in [-1, 1] crop units, with SPIN's perspective depth t_z = 2f/(224·s), f = 5000
(`weak_perspective_to_translation`), i.e. a focal length of 5000/224 crop sides. In the full
photo (H × W, principal point at the image centre, focal length F pixels) the crop of side b
pixels centred at (c_x, c_y) is seen by the translation

    T = [tx + 2(c_x - W/2)/(b·s),  ty + 2(c_y - H/2)/(b·s),  2F/(b·s)]

(`crop_to_full_translation`; the conversion CLIFF and later methods use), which puts the body's
projection where the crop saw it: the weak-perspective part is the same exactly, and a point at
depth Z (relative to the body) lands [(u_c - c)(k - 1) - (c - size/2)]·Z/(Z + T_z) pixels from
where the crop camera put it (u_c: that position; k = F / (5000·b/224), the ratio of F to the
crop's own focal length in photo pixels), a fraction of a pixel at SPIN's large depths. F
defaults to the project's focal length scaled to the photo, 5000·max(H, W)/224
(`default_focal_length`), one camera for every person of a photo; then the whole-image crop is
reproduced exactly. Pass the real focal length when it is known.

Why one module: it is the single entry point for running a trained model on pictures (the demo
and NeuHMR's initialisation use it); its parts (crops, the camera conversion, the predictor, the
loader) are short and always used together.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

import smpl_jax
from imphmr_jax.cli import ConfigError, InputError
from imphmr_jax.data import augment
from imphmr_jax.geometry import camera as cam_lib
from smpl_jax.export import smplx_params as _smplx_params
from smpl_jax.rotations import matrix_to_axis_angle

BOX_RESCALE = 1.2  # SPIN: the crop side is 1.2 times the person box's longer side
_SHRINK_FACTORS = (8, 4, 2)


# ------------------------------------------------------------------------------------- crops
@dataclasses.dataclass(frozen=True)
class Crop:
    """One model input cut from a photo.

    Attributes:
      image: (res, res, 3) uint8, what the model sees (before ImageNet normalisation).
      box: (4,) [x0, y0, x1, y1] float64 pixels of the photo: the given person box, or the whole
        image [0, 0, W, H].
      center: (2,) crop centre (x, y) in photo pixels.
      scale: SPIN's box scale: the crop side is 200·scale photo pixels.
      affine: (2, 3) photo pixels -> crop pixels (`augment.crop_transform`).
      image_size: (H, W) of the photo.
    """
    image: np.ndarray
    box: np.ndarray
    center: np.ndarray
    scale: float
    affine: np.ndarray
    image_size: tuple

    @property
    def side(self) -> float:
        """Crop side in photo pixels (b = 200·scale)."""
        return augment.BOX_UNIT * self.scale


def check_image(image, name: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array, or an InputError (a ValueError) saying what it is instead."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"{name} must be an (H, W, 3) uint8 RGB array, got {arr.dtype}"
                         f"{tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{name} is empty: {arr.shape}")
    return arr


def check_box(box, image_size) -> np.ndarray:
    """(4,) [x0, y0, x1, y1] as float64, or an InputError: not 4 finite numbers, x1 <= x0 or
    y1 <= y0, or no overlap with the H × W photo (a box partly outside is fine: truncation)."""
    h, w = image_size
    try:
        b = np.asarray(box, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"a box must be 4 numbers [x0, y0, x1, y1], got {box!r}") from None
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InputError(f"a box must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = b
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is empty (needs x1 > x0 and "
                         "y1 > y0)")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise InputError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the {w}x{h} image")
    return b


def box_to_center_scale(box, rescale: float = BOX_RESCALE):
    """[x0, y0, x1, y1] -> (center (2,) pixels, SPIN scale = rescale·max(w, h)/200)."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    return center, rescale * max(x1 - x0, y1 - y0) / augment.BOX_UNIT


def make_crop(image, box=None, res: int = 224, *, rescale: float = BOX_RESCALE,
              _reduced: Optional[dict] = None) -> Crop:
    """The model's crop of a photo.

    Args:
      image: (H, W, 3) uint8 RGB photo.
      box: [x0, y0, x1, y1] pixels of a person (`check_box`), or None for the whole image
        (centred square of side max(H, W)).
      res: crop side in pixels (the config's `data.img_res`).
      rescale: crop side / the box's longer side (SPIN's 1.2).
    Returns:
      A `Crop`.
    """
    image = check_image(image)
    h, w = image.shape[:2]
    if box is None:
        box_arr = np.array([0.0, 0.0, float(w), float(h)])
        center, scale = np.array([w / 2.0, h / 2.0]), max(h, w) / augment.BOX_UNIT
    else:
        box_arr = check_box(box, (h, w))
        center, scale = box_to_center_scale(box_arr, rescale)
    affine = augment.crop_transform(center, scale, res)
    zoom = res / (augment.BOX_UNIT * scale)
    k = next((f for f in _SHRINK_FACTORS if int(1.0 / zoom) >= f), 1)
    src, img_affine = image, affine
    if k > 1 and min(h, w) >= 2 * k:
        # Box-filter reduction: reduced pixel i averages source pixels [k·i, k·i + k), so
        # continuous reduced coordinates are source coordinates / k exactly.
        cache = _reduced if _reduced is not None else {}
        if k not in cache:
            cache[k] = np.asarray(Image.fromarray(image).reduce(k))
        src = cache[k]
        img_affine = affine.copy()
        img_affine[:, :2] *= k
    crop = augment.crop_image(src, img_affine, res)
    return Crop(image=crop, box=box_arr, center=center, scale=float(scale), affine=affine,
                image_size=(h, w))


def normalize_crops(crops_uint8) -> np.ndarray:
    """(N, res, res, 3) uint8 -> ImageNet-normalised float32, the model input (as training)."""
    return augment.normalize_image(np.asarray(crops_uint8))


# ------------------------------------------------------------------------------------- cameras
def default_focal_length(image_size) -> float:
    """The project's focal length for a whole H × W photo: SPIN's 5000 px per 224 px of crop,
    applied to the photo's longer side (5000·max(H, W)/224)."""
    h, w = image_size
    return cam_lib.FOCAL_LENGTH * max(h, w) / cam_lib.IMG_RES


def crop_to_full_translation(cam, center, side, image_size, focal_length) -> np.ndarray:
    """SPIN's weak-perspective crop camera -> the camera translation in the full photo's frame.

    Args:
      cam: (..., 3) [s, tx, ty] predicted for a crop.
      center: (..., 2) crop centre (x, y) in photo pixels. side: (...) crop side b in photo pixels.
      image_size: (H, W) of the photo. focal_length: (...) F in photo pixels.
    Returns:
      (..., 3) float64 [tx + 2(c_x - W/2)/(b·s), ty + 2(c_y - H/2)/(b·s), 2F/(b·s)] metres, for
      a pinhole camera [F, F, W/2, H/2] (see the module docstring). s <= 0 (a degenerate
      prediction) gives a non-finite or negative depth, as SPIN's own conversion would.
    """
    cam = np.asarray(cam, np.float64)
    center = np.asarray(center, np.float64)
    side = np.asarray(side, np.float64)
    focal = np.asarray(focal_length, np.float64)
    h, w = image_size
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    bs = side * s + 1e-9  # SPIN's epsilon against s = 0
    return np.stack([tx + 2.0 * (center[..., 0] - w / 2.0) / bs,
                     ty + 2.0 * (center[..., 1] - h / 2.0) / bs,
                     2.0 * focal / bs], axis=-1)


# ------------------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Prediction:
    """One person's prediction, all numpy.

    Attributes:
      image_index, box_index: which photo of the call and which of its boxes.
      crop: the `Crop` the model saw.
      rotmat: (24, 3, 3) SMPL joint rotations (joint 0 = global orientation in the camera frame).
      pose: (24, 3) the same as axis-angle, radians.
      betas: (NB,) shape. cam: (3,) weak-perspective crop camera [s, tx, ty].
      cam_t: (3,) translation in the photo's camera frame, metres (`crop_to_full_translation`).
      focal_length: F in photo pixels. intrinsics: (4,) [F, F, W/2, H/2]. image_size: (H, W).
      vertices: (V, 3), joints: (J, 3) the posed body WITHOUT translation (camera axes, metres):
        `smpl_jax.forward(body, pose, betas)`; `vertices_cam` / `joints_cam` add cam_t.
    """
    image_index: int
    box_index: int
    crop: Crop
    rotmat: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    cam: np.ndarray
    cam_t: np.ndarray
    focal_length: float
    intrinsics: np.ndarray
    image_size: tuple
    vertices: np.ndarray
    joints: np.ndarray

    @property
    def vertices_cam(self) -> np.ndarray:
        """(V, 3) vertices in the photo's camera frame = forward(body, pose, betas, cam_t)."""
        return self.vertices + self.cam_t.astype(self.vertices.dtype)

    @property
    def joints_cam(self) -> np.ndarray:
        """(J, 3) joints in the photo's camera frame."""
        return self.joints + self.cam_t.astype(self.joints.dtype)

    def smplx_params(self) -> dict:
        """`smpl_jax.export.smplx_params` of this person (B = 1), transl = cam_t: smplx's SMPL
        with these arguments gives `vertices_cam`."""
        return _smplx_params(self.pose[None], self.betas[None], self.cam_t[None])

    def camera(self) -> dict:
        """The camera fields as JSON-ready lists: cam_crop [s, tx, ty], cam_t, focal_length,
        intrinsics, image_size, box, center, scale."""
        return {"cam_crop": self.cam.tolist(), "cam_t": self.cam_t.tolist(),
                "focal_length": float(self.focal_length),
                "intrinsics": self.intrinsics.tolist(), "image_size": list(self.image_size),
                "box": self.crop.box.tolist(), "center": self.crop.center.tolist(),
                "scale": float(self.crop.scale)}


# ------------------------------------------------------------------------------------- predictor
def _forward_impl(model, extra_joints, variables, images, body):
    """View-0 prediction, SMPL mesh and joints, axis-angle pose of (B, res, res, 3) crops."""
    out = model.apply(variables, images, None, train=False)
    rotmat = out["rotmat"][:, 0].astype(jnp.float32)
    betas = out["betas"][:, 0].astype(jnp.float32)
    cam = out["cam"][:, 0].astype(jnp.float32)
    smpl = smpl_jax.forward(body, rotmat, betas, extra_joints=extra_joints)
    return {"rotmat": rotmat, "pose": matrix_to_axis_angle(rotmat), "betas": betas,
            "cam": cam, "vertices": smpl.vertices, "joints": smpl.joints}


def _views_impl(model, variables, images, phis):
    return model.apply(variables, images, phis, train=False, return_silhouette=True)


# The model and the joint sets are static: equal modules (the same config) share the program.
_forward_jit = jax.jit(_forward_impl, static_argnums=(0, 1))
_views_jit = jax.jit(_views_impl, static_argnums=(0,))


class Predictor:
    """Batched ImpHMR inference with one compiled forward.

    The forward (model at view φ = 0, `train=False`, then the SMPL mesh and joints and the
    axis-angle pose) is one jitted function with the model static, so Predictors of equal
    modules share its compiled program; it always runs on `batch_size` crops: longer inputs are
    processed in chunks, the last one padded, so every call reuses the same program. The
    variables and the body are put on the device once and passed as arguments (not baked in).
    """

    def __init__(self, model, variables, body, *, img_res: int, batch_size: int = 8,
                 extra_joints: Sequence[str] = ()):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.body = jax.device_put(body)
        self.variables = jax.device_put(variables)
        self.img_res = int(img_res)
        self.batch_size = int(batch_size)
        self.extra_joints = tuple(extra_joints)
        try:  # a hashable module (the usual case) shares one compiled program across Predictors
            hash(model)
            self._forward = functools.partial(_forward_jit, model, self.extra_joints)
            self._views = functools.partial(_views_jit, model)
        except TypeError:  # e.g. mean_params given as a dict of arrays: compile per Predictor
            self._forward = jax.jit(functools.partial(_forward_impl, model, self.extra_joints))
            self._views = jax.jit(functools.partial(_views_impl, model))

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kwargs) -> "Predictor":
        """A Predictor for `load_model`'s result (img_res from its config)."""
        return cls(loaded.model, loaded.variables, loaded.body,
                   img_res=int(loaded.config.data.img_res), **kwargs)

    def _chunks(self, images):
        n = images.shape[0]
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            m = chunk.shape[0]
            if m < self.batch_size:  # pad with copies of the last row: one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - m, 0)])
            yield m, chunk

    def forward(self, images) -> dict:
        """Model + SMPL on crops.

        Args:
          images: (N, res, res, 3) ImageNet-normalised float32 crops (`normalize_crops`).
        Returns:
          dict of numpy arrays: rotmat (N, 24, 3, 3), pose (N, 24, 3) axis-angle, betas (N, NB),
          cam (N, 3) [s, tx, ty], vertices (N, V, 3) and joints (N, 24 + K, 3) without
          translation (camera axes, metres).
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (self.img_res, self.img_res, 3):
            raise ValueError(f"Predictor.forward: images must be (N, {self.img_res}, "
                             f"{self.img_res}, 3), got {images.shape}")
        if images.shape[0] == 0:
            raise ValueError("Predictor.forward: no images")
        parts = []
        for m, chunk in self._chunks(images):
            out = jax.device_get(self._forward(self.variables, jnp.asarray(chunk), self.body))
            parts.append({k: np.asarray(v)[:m] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def views(self, images, phis) -> dict:
        """All outputs at views `phis` (the imagination panel's input): images (N, res, res, 3)
        normalised, phis (N, K) radians -> the model's dict (rotmat (N, K, 24, 3, 3), betas
        (N, K, NB), cam (N, K, 3), silhouette_logits (N, K, S, S) when the variant has a
        decoder), numpy. Jitted once per (N, K)."""
        out = self._views(self.variables, jnp.asarray(images, jnp.float32),
                          jnp.asarray(phis, jnp.float32))
        return {k: np.asarray(v) for k, v in jax.device_get(out).items()}

    def crops(self, image, boxes=None) -> list[Crop]:
        """The crops of one photo: boxes None (the whole image), one [x0, y0, x1, y1] or (P, 4)."""
        image = check_image(image)
        reduced: dict = {}
        if boxes is None:
            return [make_crop(image, None, self.img_res)]
        arr = np.asarray(boxes, np.float64)
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise InputError(f"boxes must be [x0, y0, x1, y1] or (P, 4), got {np.shape(boxes)}")
        return [make_crop(image, b, self.img_res, _reduced=reduced) for b in arr]

    def predict(self, images, boxes=None, *, focal_length=None) -> list[Prediction]:
        """Predictions for the people of one or many photos (e.g. the frames of a video).

        Args:
          images: one (H, W, 3) uint8 photo, or a sequence (or (N, H, W, 3) array) of them.
          boxes: for one photo: None (whole image), [x0, y0, x1, y1] or (P, 4); for a sequence:
            None, or one such entry per photo.
          focal_length: None (`default_focal_length` of each photo), a number, or one per photo
            (pixels).
        Returns:
          One `Prediction` per crop, photo by photo and box by box (image_index, box_index say
          which).
        """
        single = isinstance(images, np.ndarray) and images.ndim == 3
        photos = [images] if single else list(images)
        if single:
            per_image = [boxes]
        elif boxes is None:
            per_image = [None] * len(photos)
        else:
            per_image = list(boxes)
            if len(per_image) != len(photos):
                raise InputError(f"{len(photos)} images but {len(per_image)} box entries")
        if focal_length is None or np.ndim(focal_length) == 0:
            focals = [focal_length] * len(photos)
        else:
            focals = list(focal_length)
            if len(focals) != len(photos):
                raise InputError(f"{len(photos)} images but {len(focals)} focal lengths")
        crops, owners = [], []
        for i, (photo, b) in enumerate(zip(photos, per_image)):
            for j, crop in enumerate(self.crops(check_image(photo, f"image {i}"), b)):
                crops.append(crop)
                owners.append((i, j))
        if not crops:
            return []
        out = self.forward(normalize_crops(np.stack([c.image for c in crops])))
        preds = []
        for k, (crop, (i, j)) in enumerate(zip(crops, owners)):
            size = crop.image_size
            f = float(default_focal_length(size) if focals[i] is None else focals[i])
            cam_t = crop_to_full_translation(out["cam"][k], crop.center, crop.side, size, f)
            intr = np.array([f, f, size[1] / 2.0, size[0] / 2.0])
            preds.append(Prediction(
                image_index=i, box_index=j, crop=crop, rotmat=out["rotmat"][k],
                pose=out["pose"][k], betas=out["betas"][k], cam=out["cam"][k], cam_t=cam_t,
                focal_length=f, intrinsics=intr, image_size=tuple(size),
                vertices=out["vertices"][k], joints=out["joints"][k]))
        return preds


_PREDICTORS: list = []  # [(model, variables, body, img_res, batch_size, Predictor)], newest last
_MAX_CACHED = 4


def get_predictor(model, variables, body, *, img_res: int,
                  batch_size: Optional[int] = None) -> Predictor:
    """A Predictor for these objects, reused across calls with the same model, variables and
    body objects (so repeated `predict_image` calls compile once); at most a few are kept.
    batch_size None takes any cached one for these objects (its compiled batch size), else 1."""
    for entry in reversed(_PREDICTORS):
        if (entry[0] is model and entry[1] is variables and entry[2] is body
                and entry[3] == img_res and batch_size in (None, entry[4])):
            return entry[5]
    batch_size = 1 if batch_size is None else batch_size
    pred = Predictor(model, variables, body, img_res=img_res, batch_size=batch_size)
    _PREDICTORS.append((model, variables, body, img_res, batch_size, pred))
    del _PREDICTORS[:-_MAX_CACHED]
    return pred


def predict_image(model, variables, image_uint8, box=None, *, body, config,
                  focal_length: Optional[float] = None) -> Prediction:
    """One person of one photo.

    Args:
      model, variables: ImpHMR and its {'params', 'batch_stats'} (`load_model`).
      image_uint8: (H, W, 3) uint8 RGB photo.
      box: [x0, y0, x1, y1] pixels of the person, or None for the whole image.
      body: the neutral body the model predicts for (`load_model(...).body`).
      config: the run's config (its `data.img_res` sets the crop size).
      focal_length: the photo's focal length in pixels (default `default_focal_length`).
    Returns:
      A `Prediction` (crop, rotmat, axis-angle pose, betas, crop camera, camera translation in
      the photo's frame, vertices, joints).

    The compiled forward is cached for these model / variables / body objects (`get_predictor`:
    a batch of 1, or the batch size an earlier `predict_images` call compiled).
    """
    predictor = get_predictor(model, variables, body, img_res=int(config.data.img_res))
    return predictor.predict(check_image(image_uint8), box, focal_length=focal_length)[0]


def predict_images(model, variables, images, boxes=None, *, body, config, batch_size: int = 8,
                   focal_length=None) -> list[Prediction]:
    """Many photos and boxes in batches of `batch_size` crops with one compiled forward
    (`Predictor.predict` documents the arguments)."""
    predictor = get_predictor(model, variables, body, img_res=int(config.data.img_res),
                              batch_size=batch_size)
    return predictor.predict(images, boxes, focal_length=focal_length)


# ------------------------------------------------------------------------------------- loading
class LoadedModel(NamedTuple):
    """What `load_model` returns: the linen module, its variables {'params', 'batch_stats'}
    (numpy), the config it was built from, the neutral body (`config.body`) and a description
    of where the weights came from."""
    model: Any
    variables: dict
    config: ml_collections.ConfigDict
    body: Any
    source: str


def load_config(spec) -> ml_collections.ConfigDict:
    """A config from a ConfigDict (returned as is), a training workdir's `config.json` (the path
    of the file or of the workdir), or an experiment file `configs/imphmr/NAME.py[:ARG]` (its
    `get_config(ARG)`). JSON values are laid over `config.default_config()`, so fields added
    since the run was trained keep their defaults."""
    if isinstance(spec, ml_collections.ConfigDict):
        return spec
    spec = os.fspath(spec)
    path, arg = spec, ""
    if ".py:" in spec:
        head, arg = spec.split(".py:", 1)
        path = head + ".py"
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config {spec} does not exist")
    if path.endswith(".json"):
        from imphmr_jax.config import default_config
        try:
            with open(path) as f:
                values = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"config {path} is not readable JSON ({e})") from None
        config = default_config()
        config.unlock()
        config.update(values)
        return config
    if path.endswith(".py"):
        import importlib.util
        module_spec = importlib.util.spec_from_file_location("_imphmr_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"config file {path} has no get_config()")
        return module.get_config(arg) if arg else module.get_config()
    raise ConfigError(f"config {spec} must be a .py experiment file, a config.json or a workdir")


def check_variables(model, variables, config, where: str) -> None:
    """InputError naming up to five parameters when `variables` do not fit `model` (a checkpoint
    of another config)."""
    from imphmr_jax.models.build import init_variables
    from imphmr_jax.training.checkpoint import tree_differences
    want = jax.eval_shape(
        lambda k: init_variables(model, k, int(config.data.img_res), int(config.train.num_views)),
        jax.random.key(0))
    diff = tree_differences({k: want.get(k, {}) for k in ("params", "batch_stats")},
                            {k: variables.get(k, {}) for k in ("params", "batch_stats")},
                            source="weights")
    if diff:
        more = f" (and {len(diff) - 5} more)" if len(diff) > 5 else ""
        raise InputError(f"the weights in {where} do not fit this config's model: "
                         + "; ".join(diff[:5]) + more
                         + ". Use the config the weights were trained with.")


def load_model(workdir: Optional[str] = None, weights: Optional[str] = None, config=None, *,
               which: str = "best", body_model: Optional[str] = None) -> LoadedModel:
    """ImpHMR with its variables, from a trained run or converted weights.

    Args:
      workdir: a training workdir (`python -m imphmr_jax.train`): its `config.json` and its best
        checkpoint (`which`: 'best', 'latest' or a step; the moving average when kept).
      weights: a `.npz` written by `python -m imphmr_jax.convert --kind spin` (backbone and
        regressor; variants with views keep their initialised field for the rest).
      config: a ConfigDict or `load_config` spec; with a workdir it replaces the run's
        config.json, with weights the default is SPIN's architecture
        (`config.ablation_config('baseline', 'paper')`).
      body_model: replaces `config.body.model` (a `smpl_jax.load` name or path), e.g. the SMPL
        file the weights were trained with.
    Returns:
      `LoadedModel(model, variables, config, body, source)`.
    Raises:
      `cli.InputError` (a ValueError: neither or both sources, weights that do not fit the
      config, a file that is not converted SPIN weights), `cli.ConfigError` (an unreadable
      config) and FileNotFoundError (a missing workdir, config.json, checkpoint or file), each
      with a message naming the path.
    """
    from imphmr_jax import experiment
    from imphmr_jax.models.build import build_model

    if (workdir is None) == (weights is None):
        raise InputError("load_model: pass either a training workdir or converted weights "
                         f"(got workdir={workdir!r}, weights={weights!r})")
    if workdir is not None:
        root = os.path.abspath(os.path.expanduser(workdir))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"training workdir {root} does not exist")
        if config is None:
            if not os.path.exists(os.path.join(root, "config.json")):
                raise FileNotFoundError(f"{root} has no config.json (python -m imphmr_jax.train "
                                        "writes one); pass the run's config")
            config = load_config(root)
        else:
            config = load_config(config)
        config = _with_body(config, body_model)
        from imphmr_jax.training.checkpoint import load_variables
        model = build_model(config.model)
        variables = load_variables(root, which)
        variables = {"params": variables["params"],
                     "batch_stats": variables.get("batch_stats") or {}}
        check_variables(model, variables, config, f"{root} (checkpoint '{which}')")
        source = f"checkpoint '{which}' of {root}"
    else:
        path = os.path.abspath(os.path.expanduser(weights))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file {path} does not exist")
        if config is None:
            from imphmr_jax.config import ablation_config
            config = ablation_config("baseline", "paper")
        else:
            config = load_config(config)
        config = _with_body(config, body_model)
        _check_converted(path)
        from imphmr_jax.pretrained import variables_from_converted
        try:
            model, variables = variables_from_converted(config, path)
        except ValueError as e:
            raise InputError(f"the weights in {path} do not fit this config's model: {e}") \
                from None
        source = f"converted weights {path}"
    body = experiment.load_body(config)
    return LoadedModel(model, variables, config, body, source)


def _with_body(config, body_model):
    if body_model is None:
        return config
    config = copy.deepcopy(config)
    with config.unlocked():
        config.body.model = str(body_model)
    return config


def _check_converted(path: str) -> None:
    """A clear error for a file that is not converted SPIN weights."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
    except Exception as e:  # noqa: BLE001 - any reading failure means "not an npz"
        raise InputError(f"{path} is not an .npz file ({type(e).__name__}: {e})") from None
    tops = {k.split("/")[0] for k in keys}
    if "regressor" not in tops:
        what = ("a converted ResNet backbone" if "backbone" in tops or "params" in tops
                else f"an .npz with keys {sorted(tops)[:6]}")
        raise InputError(f"{path} is {what}, not converted SPIN weights: it has no SMPL "
                         "regressor (convert SPIN's checkpoint with python -m imphmr_jax.convert "
                         "--kind spin, or use a trained workdir)")
