"""Shared pieces of the video dataset loaders (`emdb`, `threedpw`).

* Reading a user's pickle, and checked access to its keys: a missing file is a FileNotFoundError
  with the path; a file that is not a pickled dict, a missing key, or a value of the wrong type or
  shape is an `InputError` whose message names the file and the key path (e.g.
  ``'camera'/'extrinsics'``).
* Posing SMPL ground truth in a camera frame (`camera_frame_smpl`): the world-frame mesh of
  (pose, β, translation), then x_cam = R x_world + t with the world -> camera extrinsics [R | t];
  global joint rotations are composed down the kinematic chain and rotated by R.
* Choosing the ground-truth body for a gender (`gt_body_for`).

Why one module: both loaders read python pickles from users and build camera-frame ground truth
the same way; the evaluation (`neuhmr_jax.evaluation`) relies on both doing it identically.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, Mapping, Optional

import jax
import numpy as np

import smpl_jax
from imphmr_jax.cli import InputError

NUM_SMPL_JOINTS = 24
_forward_jit = jax.jit(smpl_jax.forward, static_argnames=("return_vertices",))


# --------------------------------------------------------------------------- reading pickles
def read_pickle(path, what: str) -> dict:
    """A pickled dict from `path` (python 2 pickles too: latin1 decoding of byte strings).

    what: the kind of file, for the messages ('EMDB sequence', '3DPW sequence').
    Raises FileNotFoundError (missing file) or InputError (unreadable, or not a dict).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - a broken pickle raises many exception types
        raise InputError(f"{path}: cannot read the {what} file as a pickle "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise InputError(f"{path}: the {what} file must hold a pickled dict, got "
                         f"{type(obj).__name__}")
    return obj


class Fields:
    """Checked access to a pickled dict: every error names the file and the key path."""

    def __init__(self, data: Mapping, path: str, prefix: tuple = ()):
        self.data = data
        self.path = path
        self.prefix = prefix

    def key_name(self, key) -> str:
        return "/".join(repr(k) for k in self.prefix + (key,))

    def error(self, key, message) -> InputError:
        return InputError(f"{self.path}: key {self.key_name(key)}: {message}")

    def get(self, key):
        if key not in self.data:
            inside = f" in {'/'.join(repr(k) for k in self.prefix)}" if self.prefix else ""
            raise InputError(f"{self.path}: missing key {self.key_name(key)} (keys present"
                             f"{inside}: {sorted(map(str, self.data))})")
        return self.data[key]

    def sub(self, key) -> "Fields":
        value = self.get(key)
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a dict, got {type(value).__name__}")
        return Fields(value, self.path, self.prefix + (key,))

    def array(self, key, shape: tuple, dtype=np.float64, value=None) -> np.ndarray:
        """The value as an array of `dtype` whose shape matches `shape` (None = any size)."""
        value = self.get(key) if value is None else value
        try:
            a = np.asarray(value)
            if dtype is bool:
                if a.dtype != bool and not np.issubdtype(a.dtype, np.integer):
                    raise TypeError(f"dtype {a.dtype} is not boolean")
                a = a.astype(bool)
            else:
                a = a.astype(dtype)
        except (TypeError, ValueError) as e:
            kind = "boolean" if dtype is bool else np.dtype(dtype).name
            raise self.error(key, f"cannot be read as a {kind} array ({e})") from e
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise self.error(key, f"must have shape {want}, got {a.shape}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise self.error(key, "contains NaN or infinite values")
        return a

    def string(self, key, choices=None) -> str:
        value = self.get(key)
        if isinstance(value, bytes):
            value = value.decode("latin1")
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {list(choices)}, got {value!r}")
        return value

    def boolean(self, key) -> bool:
        value = self.get(key)
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                                   and value in (0, 1)):
            return bool(value)
        raise self.error(key, f"must be a bool, got {value!r}")

    def integer(self, key, minimum: int = 0) -> int:
        value = self.get(key)
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self.error(key, f"must be an integer, got {value!r}")
        if int(value) < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return int(value)


# --------------------------------------------------------------------------- ground-truth bodies
def gt_body_for(gender: str, gt_bodies, default_body) -> tuple[Any, str]:
    """The body that poses the ground truth of a subject of `gender`, and a label saying which.

    gt_bodies: None (use `default_body` for every gender: the embedded default bodies have no
      genders), a BodyModel (used for every gender), or a mapping gender -> BodyModel ('male',
      'female', 'neutral'); a mapping without the subject's gender is a ValueError.
    Returns (body, label): label is the gender when a gendered mapping was used, else
    'same body for all genders'.
    """
    if gt_bodies is None:
        return default_body, "same body for all genders"
    if isinstance(gt_bodies, Mapping):
        if gender not in gt_bodies or gt_bodies[gender] is None:
            raise ValueError(f"no ground-truth body for gender {gender!r}: gt_bodies has "
                             f"{sorted(k for k, v in gt_bodies.items() if v is not None)}; "
                             "pass e.g. {'male': smpl_jax.load('SMPL_MALE.pkl'), 'female': ...}"
                             " or gt_bodies=None to use one body for every gender")
        return gt_bodies[gender], gender
    return gt_bodies, "same body for all genders"


# --------------------------------------------------------------------------- camera-frame SMPL
@dataclasses.dataclass
class CameraFrameBody:
    """SMPL bodies posed in a camera frame (x right, y down, z forward; metres).

    root_rotmat: (n, 3, 3) global root rotation in the camera frame (R_ext · R_root).
    global_rotmats: (n, 24, 3, 3) global rotations of the 24 joints (kinematic chain composed),
      in the camera frame.
    joints: (n, 24, 3) the SMPL skeleton joints. vertices: (n, V, 3), or None when not computed.
    frames: (n,) indices of these frames in their sequence.
    """

    root_rotmat: np.ndarray
    global_rotmats: np.ndarray
    joints: np.ndarray
    vertices: Optional[np.ndarray]
    frames: np.ndarray


def global_rotations(local_rotmats, parents=smpl_jax.joint_sets.SMPL_PARENTS) -> np.ndarray:
    """Compose local joint rotations down the kinematic tree: G_j = G_parent(j) · R_j.

    local_rotmats: (n, J, 3, 3) (joint 0 = global orientation); parents[j] < j. -> (n, J, 3, 3).
    """
    local = np.asarray(local_rotmats, np.float64)
    out = np.empty_like(local)
    for j, p in enumerate(parents):
        out[:, j] = local[:, j] if p < 0 else out[:, p] @ local[:, j]
    return out


def padded_size(n, chunk):
    """Padded batch size for n frames: a power of two up to `chunk` (few compiled shapes)."""
    return min(chunk, 1 << max(0, int(np.ceil(np.log2(max(n, 1))))))


def forward_frames(body, rotmats, betas, *, vertices: bool = True, chunk: int = 128):
    """SMPL without translation over many frames in jit-compiled, padded chunks.

    rotmats: (n, 24, 3, 3) local rotations (joint 0 global). betas: (n, NB) or (NB,).
    Returns (vertices (n, V, 3) or None, joints (n, 24, 3)) as float64 numpy arrays.
    """
    rotmats = np.asarray(rotmats, np.float32)
    n = rotmats.shape[0]
    betas = np.asarray(betas, np.float32)
    if betas.ndim == 1:
        betas = np.broadcast_to(betas, (n, betas.shape[0]))
    size = padded_size(n, chunk)
    verts_out, joints_out = [], []
    for start in range(0, n, size):
        r = rotmats[start:start + size]
        b = betas[start:start + size]
        k = r.shape[0]
        if k < size:  # pad with identity rotations so every call has the same shape
            r = np.concatenate([r, np.broadcast_to(np.eye(3, dtype=np.float32),
                                                   (size - k, NUM_SMPL_JOINTS, 3, 3))])
            b = np.concatenate([b, np.zeros((size - k, b.shape[1]), np.float32)])
        out = _forward_jit(body, r, b, return_vertices=vertices)
        joints_out.append(np.asarray(out.joints[:k, :NUM_SMPL_JOINTS], np.float64))
        if vertices:
            verts_out.append(np.asarray(out.vertices[:k], np.float64))
    joints = np.concatenate(joints_out) if joints_out else np.zeros((0, NUM_SMPL_JOINTS, 3))
    verts = (np.concatenate(verts_out) if verts_out else None) if vertices else None
    return verts, joints


def pose_rotmats(pose) -> np.ndarray:
    """(n, 72) / (n, 24, 3) axis-angle or (n, 24, 3, 3) matrices -> (n, 24, 3, 3) float64."""
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose, np.float64)
    if pose.ndim == 4 and pose.shape[1:] == (NUM_SMPL_JOINTS, 3, 3):
        return pose
    if pose.ndim == 2 and pose.shape[1] == 3 * NUM_SMPL_JOINTS:
        pose = pose.reshape(-1, NUM_SMPL_JOINTS, 3)
    if pose.ndim != 3 or pose.shape[1:] != (NUM_SMPL_JOINTS, 3):
        raise ValueError("pose must be (n, 72) or (n, 24, 3) axis-angle, or (n, 24, 3, 3) "
                         f"rotation matrices, got {pose.shape}")
    n = pose.shape[0]
    return Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(n, NUM_SMPL_JOINTS, 3, 3)


def camera_frame_smpl(body, pose, betas, trans, world_to_camera, *, frames=None,
                      vertices: bool = True, chunk: int = 128) -> CameraFrameBody:
    """World-frame SMPL ground truth moved into a camera frame.

    The world body is SMPL(pose, β) + trans (the translation added in float64), then every point
    x_cam = R x + t and every global rotation R · G with the frame's world -> camera [R | t].

    Args:
      body: a BodyModel (smpl_jax.load). pose: (n, 72) axis-angle, world-frame root.
      betas: (NB,) or (n, NB). trans: (n, 3) metres. world_to_camera: (n, 4, 4).
      frames: optional indices: compute only these frames (e.g. the good frames).
      vertices: also pose the mesh (False: joints and rotations only, faster).
    """
    rot = pose_rotmats(pose)
    trans = np.asarray(trans, np.float64)
    ext = np.asarray(world_to_camera, np.float64)
    betas = np.asarray(betas, np.float64)
    idx = np.arange(rot.shape[0]) if frames is None else np.asarray(frames, np.int64)
    rot, trans, ext = rot[idx], trans[idx], ext[idx]
    if betas.ndim == 2:
        betas = betas[idx]
    verts, joints = forward_frames(body, rot, betas, vertices=vertices, chunk=chunk)
    r_ext, t_ext = ext[:, :3, :3], ext[:, :3, 3]

    def to_cam(points):
        return np.einsum("nij,npj->npi", r_ext, points + trans[:, None, :]) + t_ext[:, None, :]

    glob = np.einsum("nij,nkjl->nkil", r_ext, global_rotations(rot, body.parents))
    return CameraFrameBody(root_rotmat=glob[:, 0], global_rotmats=glob, joints=to_cam(joints),
                           vertices=None if verts is None else to_cam(verts), frames=idx)
