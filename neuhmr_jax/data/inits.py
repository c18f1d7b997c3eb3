"""Per-frame SMPL initialisations of a video, the starting point NeuHMR refines
(docs/neuhmr_inputs.md).

One type, `Init`: poses (T, 24, 3) axis-angle (joint 0 = the root orientation in the camera
frame), betas (T, 10), transl (T, 3) metres, such that `smpl_jax.forward(body, poses, betas,
transl)` is the body in the camera frame (x right, y down, z forward), and `source` saying where
it came from. Loaders:

* `load_npz(path)`: an .npz with poses / betas / transl (betas may be one (10,) row for every
  frame; `trans` is read as transl), or smplx's layout global_orient / body_pose / betas / transl
  (`smpl_jax.export.save_smplx_params`, the demo's params.npz). `save_npz` writes the first form.
* `load_hybrik(dir, body)`: HybrIK's per-frame pickles `%06d.pkl` (the layout EMDB's evaluation
  reads) with pred_theta_mats (24 rotation matrices, flat or (24, 3, 3), a leading 1 allowed),
  pred_shape (10) and transl. HybrIK's transl is the offset it adds to its root-centred output,
  i.e. where the root (pelvis) joint lies in the camera frame; the SMPL translation is that minus
  the root joint of the unposed-translation body, transl_smpl = transl_hybrik - J_0(β) (J_0 does
  not depend on the pose), which needs the body model.
* `load_imphmr(frames, predictor, boxes=..., K=...)`: runs ImpHMR (`imphmr_jax.inference`) on
  every frame's crop and turns its weak-perspective crop camera into a translation for the
  video's own intrinsics (`crop_camera_to_translation`).
* `load_init(spec, num_frames, ...)`: any of the above, chosen by what `spec` is.

Every loader checks what it reads: a missing file is a FileNotFoundError with the path; a file
that cannot be read, a missing key, a wrong shape, a NaN (naming the key and the first bad frame)
or a frame count that differs from the video's (naming both counts) is an `InputError` naming the
file.

Why one module: every loader produces and validates the same `Init`, and the checks (shapes,
NaNs, frame counts) and the camera conventions they share are one contract kept in one place.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

import numpy as np

from imphmr_jax import demo
from imphmr_jax.cli import InputError, error_message, expand_path
from neuhmr_jax.data.common import NUM_SMPL_JOINTS, Fields, read_pickle

NUM_BETAS = 10
_HYBRIK_FILE = re.compile(r"^(\d+)\.pkl$")
_HYBRIK_SUBDIR = "hybrIK-out"
_ROTATION_TOL = 1e-2  # max |RᵀR - I| and |det R - 1| accepted for a stored rotation matrix


# ------------------------------------------------------------------------------------- Init
@dataclasses.dataclass(frozen=True)
class Init:
    """Per-frame SMPL of a video, in the camera frame.

    Attributes:
      poses: (T, 24, 3) float32 axis-angle, radians; joint 0 is the root orientation in the
        camera frame (x right, y down, z forward), joints 1..23 relative to their parents.
      betas: (T, 10) float32 shape coefficients.
      transl: (T, 3) float32 metres: `smpl_jax.forward(body, poses, betas, transl)` places the
        body in the camera frame.
      source: where it came from (a file, a folder, a model); error messages start with it.

    Construction checks the shapes (a (10,) betas row is repeated for every frame) and that every
    value is finite, raising `InputError` naming `source`, the key and the first bad frame.
    """
    poses: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    source: str = "init"

    def __post_init__(self):
        poses = _float_array(self.poses, "poses", self.source)
        betas = _float_array(self.betas, "betas", self.source)
        transl = _float_array(self.transl, "transl", self.source)
        if poses.ndim != 3 or poses.shape[1:] != (NUM_SMPL_JOINTS, 3) or poses.shape[0] < 1:
            raise InputError(f"{self.source}: key 'poses' must have shape (T, 24, 3) with T >= 1"
                             f" (axis-angle), got {poses.shape}")
        n = poses.shape[0]
        if betas.shape == (NUM_BETAS,):
            betas = np.broadcast_to(betas, (n, NUM_BETAS))
        if betas.shape != (n, NUM_BETAS):
            raise InputError(f"{self.source}: key 'betas' must have shape ({n}, {NUM_BETAS}) or "
                             f"({NUM_BETAS},), got {betas.shape}")
        if transl.shape != (n, 3):
            raise InputError(f"{self.source}: key 'transl' must have shape ({n}, 3), got "
                             f"{transl.shape}")
        for key, value in (("poses", poses), ("betas", betas), ("transl", transl)):
            check_finite(value, key, self.source)
        object.__setattr__(self, "poses", np.ascontiguousarray(poses, np.float32))
        object.__setattr__(self, "betas", np.ascontiguousarray(betas, np.float32))
        object.__setattr__(self, "transl", np.ascontiguousarray(transl, np.float32))

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    def check_num_frames(self, num_frames: Optional[int], what: str = "the video") -> "Init":
        """self, or an InputError naming the source and both frame counts."""
        if num_frames is not None and self.num_frames != int(num_frames):
            raise InputError(f"{self.source} holds {self.num_frames} frames but {what} has "
                             f"{int(num_frames)}: the initialisation needs one entry per frame")
        return self

    def rotmats(self) -> np.ndarray:
        """(T, 24, 3, 3) float64 rotation matrices of `poses`."""
        from neuhmr_jax.data.common import pose_rotmats
        return pose_rotmats(self.poses)

    def replace(self, **changes) -> "Init":
        """A copy with some fields replaced (checked again)."""
        return dataclasses.replace(self, **changes)


def _float_array(value, key: str, source: str) -> np.ndarray:
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: key {key!r} cannot be read as numbers ({e})") from None


def check_finite(value: np.ndarray, key: str, source: str) -> None:
    """InputError naming the source, the key and the first frame (row) holding a NaN / inf."""
    bad = ~np.isfinite(np.asarray(value).reshape(np.shape(value)[0], -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise InputError(f"{source}: key {key!r} holds NaN or infinite values, first at frame "
                         f"{first} ({int(bad.sum())} bad frames)")


# ------------------------------------------------------------------------------------- npz
def _pose_axis_angle(poses, where: str) -> np.ndarray:
    """(T, 72) / (T, 24, 3) axis-angle or (T, 24, 3, 3) matrices -> (T, 24, 3) axis-angle."""
    p = np.asarray(poses)
    if p.ndim == 4 and p.shape[1:] == (NUM_SMPL_JOINTS, 3, 3):
        return rotmats_to_axis_angle(p, where)
    if p.ndim == 2 and p.shape[1] == 3 * NUM_SMPL_JOINTS:
        return p.reshape(-1, NUM_SMPL_JOINTS, 3)
    if p.ndim == 3 and p.shape[1:] == (NUM_SMPL_JOINTS, 3):
        return p
    raise InputError(f"{where}: must be axis-angle (T, 24, 3) / (T, 72) or rotation matrices "
                     f"(T, 24, 3, 3), got shape {p.shape}")


def load_npz(path) -> Init:
    """An Init from an .npz: keys poses, betas, transl (or trans), or smplx's global_orient,
    body_pose, betas, transl.

    poses: (T, 24, 3) / (T, 72) axis-angle or (T, 24, 3, 3) matrices; betas (T, 10) or (10,);
    transl (T, 3) metres, camera frame. A 'source' string stored by `save_npz` is kept in the
    Init's source.
    """
    path = expand_path(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"initialisation file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - any reading failure means "not an npz"
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: "
                         f"{error_message(e)})") from None
    keys = sorted(arrays)
    source = path
    if "source" in arrays and arrays["source"].dtype.kind == "U" and arrays["source"].ndim == 0:
        source = f"{path} (from {arrays['source'].item()})"

    def need(*names):
        for n in names:
            if n in arrays:
                return n, arrays[n]
        raise InputError(f"{path}: missing key {names[0]!r} (keys present: {keys}); an "
                         "initialisation .npz holds poses, betas, transl")

    if "poses" in arrays:
        poses = _pose_axis_angle(arrays["poses"], f"{path}: key 'poses'")
    elif "global_orient" in arrays and "body_pose" in arrays:
        root = np.asarray(arrays["global_orient"]).reshape(-1, 1, 3)
        body = np.asarray(arrays["body_pose"])
        if body.ndim != 2 or body.shape[1] != 3 * (NUM_SMPL_JOINTS - 1) \
                or body.shape[0] != root.shape[0]:
            raise InputError(f"{path}: key 'body_pose' must have shape ({root.shape[0]}, 69), "
                             f"got {body.shape}")
        poses = np.concatenate([root, body.reshape(-1, NUM_SMPL_JOINTS - 1, 3)], axis=1)
    else:
        need("poses")
    _, betas = need("betas")
    betas = np.asarray(betas)
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    _, transl = need("transl", "trans")
    return Init(poses, betas, transl, source=source)


def save_npz(init: Init, path) -> str:
    """Write an Init as .npz (poses, betas, transl, source); returns the path written ('.npz' is
    appended when missing). `load_npz` reads it back."""
    path = expand_path(os.fspath(path))
    if not path.endswith(".npz"):
        path += ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, poses=init.poses, betas=init.betas, transl=init.transl,
             source=np.asarray(str(init.source)))
    return path


# ------------------------------------------------------------------------------------- HybrIK
def rotmats_to_axis_angle(rotmats, where: str) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle (scipy, as EMDB's evaluation does);
    an InputError naming `where` and the first bad matrix when one is not a rotation."""
    from scipy.spatial.transform import Rotation

    m = np.asarray(rotmats, np.float64)
    flat = m.reshape(-1, 3, 3)
    if not np.all(np.isfinite(flat)):
        raise InputError(f"{where}: holds NaN or infinite values")
    ortho = np.abs(np.einsum("nji,njk->nik", flat, flat) - np.eye(3)).max(axis=(1, 2))
    det_err = np.abs(np.linalg.det(flat) - 1.0)
    bad = (ortho > _ROTATION_TOL) | (det_err > _ROTATION_TOL)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(f"{where}: matrix {k} is not a rotation (|RᵀR - I| = {ortho[k]:.3g}, "
                         f"det = {np.linalg.det(flat[k]):.4g})")
    return Rotation.from_matrix(flat).as_rotvec().reshape(m.shape[:-2] + (3,))


def hybrik_files(directory) -> list:
    """The per-frame HybrIK pickles of a folder (or of its hybrIK-out/ subfolder), in frame
    order; an InputError when there are none or a frame number is missing."""
    directory = expand_path(os.fspath(directory))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise InputError(f"{directory} is not a folder of HybrIK %06d.pkl files")
        raise FileNotFoundError(f"HybrIK results folder {directory} does not exist")
    numbered = _numbered_pickles(directory)
    sub = os.path.join(directory, _HYBRIK_SUBDIR)
    if not numbered and os.path.isdir(sub):
        directory, numbered = sub, _numbered_pickles(sub)
    if not numbered:
        raise InputError(f"no HybrIK per-frame pickles (000000.pkl, 000001.pkl, ...) in "
                         f"{directory}")
    indices = sorted(numbered)
    expected = range(indices[0], indices[0] + len(indices))
    if indices != list(expected):
        missing = next(i for i in expected if i not in numbered)
        raise InputError(f"{directory}: HybrIK frame {missing:06d}.pkl is missing (frames "
                         f"{indices[0]}..{indices[-1]} must all be there)")
    return [os.path.join(directory, numbered[i]) for i in indices]


def _numbered_pickles(directory: str) -> dict:
    out = {}
    for name in os.listdir(directory):
        m = _HYBRIK_FILE.match(name)
        if m and os.path.isfile(os.path.join(directory, name)):
            out[int(m.group(1))] = name
    return out


def _frame_array(fields: Fields, key: str, size: int, shape_text: str, where: str):
    value = fields.get(key)
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise fields.error(key, f"cannot be read as numbers ({e})") from None
    if a.size != size:
        raise fields.error(key, f"must hold {shape_text} ({size} numbers), got shape {a.shape}"
                           + ("; 96 numbers look like quaternions, which are not supported"
                              if key == "pred_theta_mats" and a.size == 96 else ""))
    if not np.all(np.isfinite(a)):
        raise fields.error(key, f"holds NaN or infinite values ({where})")
    return a


def load_hybrik(directory, body) -> Init:
    """An Init from HybrIK's per-frame pickles.

    Args:
      directory: a folder of `%06d.pkl` files (consecutive frame numbers; the first is frame 0
        of the video), or a folder holding them in `hybrIK-out/`. Each pickle is a dict with
        pred_theta_mats (24 rotation matrices: 216 numbers, (24, 3, 3), (1, 216), ...),
        pred_shape (10 numbers) and transl (3 numbers: the camera-frame position of the root).
      body: the SMPL body (`smpl_jax.load`) NeuHMR poses: its root joint J_0(β) converts HybrIK's
        root offset into SMPL's transl (transl = transl_hybrik - J_0(β)).
    Returns:
      An Init (rotation matrices converted to axis-angle).
    """
    import smpl_jax

    files = hybrik_files(directory)
    poses, betas, offsets = [], [], []
    for i, path in enumerate(files):
        fields = Fields(read_pickle(path, "HybrIK frame"), path)
        where = f"frame {i}"
        rot = _frame_array(fields, "pred_theta_mats", 24 * 9, "24 rotation matrices", where)
        betas.append(_frame_array(fields, "pred_shape", NUM_BETAS, "10 shape coefficients",
                                  where).reshape(NUM_BETAS))
        offsets.append(_frame_array(fields, "transl", 3, "a 3D translation", where).reshape(3))
        poses.append(rotmats_to_axis_angle(rot.reshape(NUM_SMPL_JOINTS, 3, 3),
                                           f"{path}: key 'pred_theta_mats'"))
    betas = np.stack(betas)
    zero = np.zeros((len(files), NUM_SMPL_JOINTS, 3), np.float32)
    root = np.asarray(smpl_jax.forward(body, zero, betas.astype(np.float32),
                                       return_vertices=False).joints[:, 0], np.float64)
    source = f"HybrIK results {os.path.dirname(files[0])}"
    return Init(np.stack(poses), betas, np.stack(offsets) - root, source=source)


# ------------------------------------------------------------------------------------- ImpHMR
def crop_camera_to_translation(cam, center, side, K) -> np.ndarray:
    """ImpHMR's (SPIN's) crop camera [s, tx, ty] -> the SMPL translation for the video's K.

    The model sees a square crop of side b photo pixels centred at c = (c_x, c_y) and predicts
    [s, tx, ty]: a body point X (camera axes, metres, no translation) at the body's depth lands
    at photo pixel c + (b/2)·s·(X_xy + t_xy) (s·(X_xy + t_xy) in [-1, 1] crop units; SPIN's
    crop camera has the depth t_z = 2·5000/(224·s)). A pinhole K = [[fx, 0, p_x], [0, fy, p_y],
    [0, 0, 1]] with translation T puts X at (fx (X_x + T_x), fy (X_y + T_y)) / (X_z + T_z) + p.
    Matching the two at the body's depth (X_z = 0), with f = √(fx·fy):

        T_z = 2f / (b·s)
        T_x = (f / fx)·(tx + 2(c_x - p_x)/(b·s))
        T_y = (f / fy)·(ty + 2(c_y - p_y)/(b·s))

    For fx = fy this is `imphmr_jax.inference.crop_to_full_translation` with the principal point
    p in place of the image centre (it is computed by it): every point at the body's depth lands
    exactly where the crop camera put it, and a point at relative depth Z lands
    [(u_c - c)(k - 1) - (c - p)]·Z/(Z + T_z) pixels away from it (u_c: the crop camera's pixel,
    k = f / (5000·b/224)), the perspective the crop camera cannot know. With fx != fy the crop's
    square pixels cannot match both axes: the body origin still lands exactly, sizes differ by
    fx/f and fy/f.

    Args:
      cam: (..., 3) [s, tx, ty]. center: (..., 2) crop centre in photo pixels. side: (...) crop
        side b in photo pixels (`inference.Crop.side`). K: (3, 3) intrinsics of the photo.
    Returns:
      (..., 3) float64 translation, metres.
    """
    from imphmr_jax.inference import crop_to_full_translation

    K = np.asarray(K, np.float64)
    fx, fy, px, py = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    f = np.sqrt(fx * fy)
    t = crop_to_full_translation(cam, center, side, (2.0 * py, 2.0 * px), f)
    return t * np.array([f / fx, f / fy, 1.0])


def default_intrinsics(image_size) -> np.ndarray:
    """The intrinsics ImpHMR assumes for a photo without a known camera: focal length
    `inference.default_focal_length`, principal point at the image centre. (3, 3) float32."""
    from imphmr_jax.inference import default_focal_length

    h, w = image_size
    f = default_focal_length((h, w))
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]], np.float32)


def _frame_names(frames) -> list:
    names = getattr(frames, "names", None)
    return list(names) if names is not None else [f"{i:06d}" for i in range(len(frames))]


def _largest(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return b[int(np.argmax(area))]


def frame_boxes(frames, boxes) -> Optional[np.ndarray]:
    """One person box [x0, y0, x1, y1] per frame, (T, 4) float64, or None (whole frames).

    boxes: None; a (T, 4) array; a .npy file holding one; or a boxes file in the demo's formats
    (`imphmr_jax.demo.parse_boxes`: COCO-style JSON or `FILE x0 y0 x1 y1` lines) or its parsed
    `demo.Boxes`. A folder's frames are matched by file name (or the numeric image id); a video's
    frames by their 0-based frame number (FILE or image_id '12', '000012' or '000012.jpg' all
    name frame 12). Several boxes of one frame: the largest is used (NeuHMR follows one person).
    """
    if boxes is None:
        return None
    n = len(frames)
    where = "boxes"
    if isinstance(boxes, (str, os.PathLike)):
        path = expand_path(os.fspath(boxes))
        if path.lower().endswith(".npy"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"boxes file {path} does not exist")
            try:
                boxes = np.load(path, allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise InputError(f"{path} is not a readable .npy file ({type(e).__name__}: "
                                 f"{error_message(e)})") from None
            where = path
        else:
            boxes = demo.parse_boxes(path)
    if isinstance(boxes, demo.Boxes):
        return _boxes_by_frame(frames, boxes)
    try:
        arr = np.asarray(boxes, np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: boxes must be a (T, 4) array [x0, y0, x1, y1]") from None
    if arr.shape != (n, 4):
        raise InputError(f"{where}: boxes must be one [x0, y0, x1, y1] per frame, shape "
                         f"({n}, 4) for this {n}-frame video, got {arr.shape}")
    return arr


def _boxes_by_frame(frames, boxes) -> np.ndarray:
    names = _frame_names(frames)
    source = os.path.basename(boxes.source)
    if getattr(frames, "kind", "images") == "images" and getattr(frames, "_files", None):
        return np.stack([_largest(boxes.lookup(name)) for name in names])
    by_index: dict = {}
    for table in (boxes.by_name, boxes.by_id):
        for key, rows in table.items():
            stem = os.path.splitext(str(key))[0]
            if stem.isdigit():
                by_index.setdefault(int(stem), []).extend(rows)
    out = []
    for i, name in enumerate(names):
        if i not in by_index:
            raise InputError(f"no box for frame {i} ({name}) in {source}")
        out.append(_largest(by_index[i]))
    return np.stack(out)


def load_imphmr(frames, predictor=None, *, workdir=None, weights=None, config=None, boxes=None,
                K=None, batch_size: int = 8, progress: bool = True) -> Init:
    """An Init from ImpHMR run on every frame (NeuHMR's own initialisation option).

    Args:
      frames: a `video.Frames` (or any sequence of (H, W, 3) uint8 frames of one size).
      predictor: an `inference.Predictor` or `inference.LoadedModel`; or None and the model is
        loaded with `inference.load_model(workdir, weights, config)`.
      boxes: the person's box per frame (`frame_boxes`), or None for whole frames.
      K: the video's intrinsics (anything `video.parse_intrinsics` reads); None = ImpHMR's default
        camera for the frame size (`default_intrinsics`).
      batch_size: crops per forward when the predictor is built here.
      progress: show a progress bar over the frames.
    Returns:
      An Init: ImpHMR's pose and betas per frame, and the translation from its crop camera for K
      (`crop_camera_to_translation`).
    """
    from imphmr_jax import inference
    from imphmr_jax.training.writer import progress_bar
    from neuhmr_jax.data.video import parse_intrinsics

    if predictor is None:
        loaded = inference.load_model(workdir=workdir, weights=weights, config=config)
        predictor = inference.Predictor.from_loaded(loaded, batch_size=batch_size)
        source = f"ImpHMR ({loaded.source})"
    elif isinstance(predictor, inference.LoadedModel):
        source = f"ImpHMR ({predictor.source})"
        predictor = inference.Predictor.from_loaded(predictor, batch_size=batch_size)
    else:
        source = "ImpHMR"
    n = len(frames)
    if n < 1:
        raise InputError("load_imphmr: the video has no frames")
    image_size = getattr(frames, "image_size", None) or tuple(np.shape(frames[0])[:2])
    K = default_intrinsics(image_size) if K is None else parse_intrinsics(K)
    per_frame = frame_boxes(frames, boxes)
    chunk = max(1, int(getattr(predictor, "batch_size", batch_size)))
    poses, betas, transl = [], [], []
    bar = progress_bar(n, enabled=progress, desc="ImpHMR init")
    try:
        for start in range(0, n, chunk):
            idx = range(start, min(n, start + chunk))
            images = [frames[i] for i in idx]
            chunk_boxes = None if per_frame is None else [per_frame[i] for i in idx]
            try:
                preds = predictor.predict(images, chunk_boxes)
            except InputError as e:  # a box outside its frame, a frame that is not an image
                raise InputError(f"frames {idx[0]}..{idx[-1]}: {e}") from None
            for p in preds:
                poses.append(p.pose)
                b = np.asarray(p.betas, np.float64).reshape(-1)
                if b.size > NUM_BETAS:
                    raise InputError(f"{source} predicts {b.size} betas; an Init holds "
                                     f"{NUM_BETAS}")
                betas.append(np.pad(b, (0, NUM_BETAS - b.size)))
                transl.append(crop_camera_to_translation(p.cam, p.crop.center, p.crop.side, K))
            if bar is not None:
                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return Init(np.stack(poses), np.stack(betas), np.stack(transl), source=source)


# ------------------------------------------------------------------------------------- dispatch
def _npz_keys(path: str) -> list:
    try:
        with np.load(path, allow_pickle=False) as data:
            return list(data.files)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: "
                         f"{error_message(e)})") from None


def load_init(spec, num_frames: Optional[int] = None, *, body=None, frames=None, boxes=None,
              K=None, predictor=None, config=None, batch_size: int = 8,
              progress: bool = True) -> Init:
    """The initialisation a user names, checked against the video's frame count.

    spec:
      * an `Init` (checked only);
      * an .npz with poses / betas / transl (or smplx's layout): `load_npz`;
      * a folder of HybrIK `%06d.pkl` files (or holding hybrIK-out/): `load_hybrik` (needs `body`);
      * 'imphmr' with `predictor`, an ImpHMR training workdir (has config.json) or converted SPIN
        weights (.npz with the model's 'regressor' arrays): `load_imphmr` on `frames` with
        `boxes`, `K` (and `config` for weights).
    num_frames: the video's frame count (None: not checked; default len(frames) when given).
    Raises FileNotFoundError for a missing path and InputError for anything else unusable, naming
    the file (and both counts when they differ).
    """
    if num_frames is None and frames is not None:
        num_frames = len(frames)
    if isinstance(spec, Init):
        return spec.check_num_frames(num_frames)

    def imphmr(**kw):
        if frames is None:
            raise InputError(f"an ImpHMR initialisation ({spec}) runs the model on the video's "
                             "frames: pass frames")
        return load_imphmr(frames, boxes=boxes, K=K, config=config, batch_size=batch_size,
                           progress=progress, **kw)

    if spec is None or (isinstance(spec, str) and spec.lower() == "imphmr"):
        if predictor is None:
            raise InputError("an ImpHMR initialisation needs a model: give a training workdir, "
                             "converted weights (.npz) or a predictor")
        return imphmr(predictor=predictor).check_num_frames(num_frames)
    path = expand_path(os.fspath(spec))
    if not os.path.exists(path):
        raise FileNotFoundError(f"initialisation {path} does not exist")
    if os.path.isdir(path):
        if _numbered_pickles(path) or os.path.isdir(os.path.join(path, _HYBRIK_SUBDIR)):
            if body is None:
                raise ValueError("load_init: HybrIK results need the SMPL body (body=...) to "
                                 "turn their root offset into SMPL's transl")
            init = load_hybrik(path, body)
        elif os.path.isfile(os.path.join(path, "config.json")):
            init = imphmr(workdir=path)
        else:
            raise InputError(f"{path} is neither a folder of HybrIK %06d.pkl files nor an ImpHMR "
                             "training workdir (config.json)")
    elif path.lower().endswith(".npz"):
        keys = _npz_keys(path)
        tops = {k.split("/")[0] for k in keys}
        if "regressor" in tops:
            init = imphmr(weights=path)
        else:
            init = load_npz(path)
    else:
        raise InputError(f"{path}: an initialisation is an .npz (poses, betas, transl), a folder "
                         "of HybrIK %06d.pkl files, an ImpHMR workdir or converted weights")
    return init.check_num_frames(num_frames)
