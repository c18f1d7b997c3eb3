"""3DPW (von Marcard et al., ECCV 2018) sequences from the user's own copy
(docs/video_evaluation.md#3dpw).

Layout read: '<root>/sequenceFiles/<split>/<sequence>.pkl' (split 'train', 'validation', 'test'),
python 2 pickles (read with latin1 decoding), and the frames in
'<root>/imageFiles/<sequence>/image_%05d.jpg' (paths only, not read). Keys read from each pickle
(a missing or malformed one is an InputError naming the file and the key):

    'sequence'        the sequence name
    'genders'         per person 'm' | 'f' ('gender' is accepted when 'genders' is absent)
    'poses'           per person (T, 72) world-frame SMPL axis-angle
    'betas'           per person (>= 10,): the first 10 are used (the files hold more)
    'trans'           per person (T, 3) metres
    'cam_poses'       (T, 4, 4) WORLD -> CAMERA extrinsics of every image frame
    'cam_intrinsics'  (3, 3)
    'campose_valid'   per person (T,) bool: frames whose camera pose is aligned to the image

A sequence has one or two people; the evaluation treats each person as one track named
'<sequence>_<person index>'. Other keys ('poses2d', 'jointPositions', 'img_frame_ids', 60 Hz
data, clothed shapes, textures) are not read.

Why one module: the file layout, the per-person lists and the world -> camera convention belong
together; the metrics are `neuhmr_jax.evaluation`'s.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np

from imphmr_jax.cli import expand_path
from neuhmr_jax.data.common import (CameraFrameBody, Fields, camera_frame_smpl, gt_body_for,
                                    read_pickle)

NUM_BETAS = 10
GENDER_NAMES = {"m": "male", "f": "female", "male": "male", "female": "female",
                "neutral": "neutral"}


@dataclasses.dataclass
class Person:
    """One person of a 3DPW sequence: index in the file's lists, gender ('male' / 'female'),
    poses (T, 72), betas (10,), trans (T, 3), campose_valid (T,) bool."""

    index: int
    gender: str
    poses: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    campose_valid: np.ndarray

    @property
    def valid_frames(self) -> np.ndarray:
        return np.flatnonzero(self.campose_valid)


@dataclasses.dataclass
class Sequence:
    """One 3DPW sequence: path, name, split (the folder it was read from), n_frames T,
    cam_poses (T, 4, 4) world -> camera, intrinsics (3, 3), people [Person], image_paths."""

    path: str
    name: str
    split: str
    n_frames: int
    cam_poses: np.ndarray
    intrinsics: np.ndarray
    people: list
    image_paths: list

    def track_name(self, person_index: int) -> str:
        return f"{self.name}_{person_index}"


def _per_person(f: Fields, key, count=None) -> list:
    """The per-person list under `key` (a list, tuple or array with one entry per person)."""
    value = f.get(key)
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        value = list(value)
    if not isinstance(value, (list, tuple)):
        raise f.error(key, f"must be a list with one entry per person, got "
                      f"{type(value).__name__}")
    if not value:
        raise f.error(key, "is empty (a sequence has one or two people)")
    if count is not None and len(value) != count:
        raise f.error(key, f"has {len(value)} entries but 'poses' has {count} people")
    return list(value)


def load_sequence(path) -> Sequence:
    """Read and check one '<sequence>.pkl'. FileNotFoundError / InputError naming the file and
    key."""
    path = expand_path(os.fspath(path))
    raw = read_pickle(path, "3DPW sequence")
    f = Fields(raw, path)
    name = f.string("sequence")
    cam_poses = f.array("cam_poses", (None, 4, 4))
    t = cam_poses.shape[0]
    intrinsics = f.array("cam_intrinsics", (3, 3))
    poses = _per_person(f, "poses")
    count = len(poses)
    gender_key = "genders" if "genders" in raw or "gender" not in raw else "gender"
    genders = _per_person(f, gender_key, count)
    betas = _per_person(f, "betas", count)
    trans = _per_person(f, "trans", count)
    valid = _per_person(f, "campose_valid", count)
    people = []
    for p in range(count):
        g = genders[p].decode("latin1") if isinstance(genders[p], bytes) else genders[p]
        if g not in GENDER_NAMES:
            raise f.error(gender_key, f"entry {p} must be 'm' or 'f', got {g!r}")
        b = _entry(f, "betas", p, betas[p], (None,), reshape=True)
        if b.shape[0] < NUM_BETAS:
            raise f.error("betas", f"entry {p} has {b.shape[0]} values; at least {NUM_BETAS} "
                          "are needed")
        people.append(Person(
            index=p, gender=GENDER_NAMES[g],
            poses=_entry(f, "poses", p, poses[p], (t, 72)),
            betas=b[:NUM_BETAS],
            trans=_entry(f, "trans", p, trans[p], (t, 3)),
            campose_valid=_entry(f, "campose_valid", p, valid[p], (t,), dtype=bool)))
    split = os.path.basename(os.path.dirname(os.path.abspath(path)))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    images = [os.path.join(root, "imageFiles", name, f"image_{i:05d}.jpg") for i in range(t)]
    return Sequence(path=path, name=name, split=split, n_frames=t, cam_poses=cam_poses,
                    intrinsics=intrinsics, people=people, image_paths=images)


def _entry(f: Fields, key, p, value, shape, dtype=np.float64, reshape=False):
    """Person p's entry of a per-person list, checked; errors name '<key>'[p]."""
    sub = Fields({p: value}, f.path, (key,))
    if reshape:
        value = np.asarray(value).reshape(-1)
    return sub.array(p, shape, dtype=dtype, value=value)


def find_sequences(root, split: str = "test") -> list:
    """All sequences of a split: '<root>/sequenceFiles/<split>/*.pkl', sorted by file name.

    FileNotFoundError when the folder is missing or holds no .pkl file."""
    root = expand_path(os.fspath(root))
    folder = os.path.join(root, "sequenceFiles", split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"3DPW split folder not found: {folder} (expected "
                                "<root>/sequenceFiles/<split>/<sequence>.pkl)")
    files = sorted(glob.glob(os.path.join(folder, "*.pkl")))
    if not files:
        raise FileNotFoundError(f"no 3DPW sequence files (*.pkl) in {folder}")
    return [load_sequence(p) for p in files]


def gt_camera_frame(seq: Sequence, person: int, body_for_gender, *, frames=None,
                    vertices: bool = True, chunk: int = 128) -> CameraFrameBody:
    """Person `person`'s ground truth in the camera frame: SMPL(poses, betas) + trans of the
    person's body, then x_cam = R x + t with cam_poses [R | t] (as `emdb.gt_camera_frame`).

    body_for_gender: a BodyModel, or a mapping gender -> BodyModel ('male' / 'female').
    frames: optional frame indices (e.g. seq.people[p].valid_frames)."""
    who = seq.people[person]
    body, _ = gt_body_for(who.gender, body_for_gender, None)  # a mapping or one body
    return camera_frame_smpl(body, who.poses, who.betas, who.trans, seq.cam_poses,
                             frames=frames, vertices=vertices, chunk=chunk)
