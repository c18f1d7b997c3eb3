"""EMDB (Kaufmann et al., ICCV 2023) sequences from the user's own copy, and their ground truth in
the camera frame (docs/video_evaluation.md#emdb).

Layout read (EMDB's `dataset.md`), `root` being the folder that holds P0 ... P9:

    <root>/P<k>/<sequence>/
      P<k>_<sequence>_data.pkl   a pickled dict (below)
      images/00000.jpg ...       the frames, '%05d.jpg' from 0 (not read here; paths only)
      P<k>_<sequence>_video.mp4  (not read)

`*_data.pkl` keys (every one is required and checked; an error names the file and the key):

    'gender'            'female' | 'male' | 'neutral'
    'name'              '<subject>_<sequence>'
    'emdb1', 'emdb2'    bool: part of EMDB 1 (camera-relative benchmark) / EMDB 2 (global)
    'n_frames'          int n
    'good_frames_mask'  (n,) bool: frames used by the evaluation
    'camera'            {'intrinsics' (3, 3), 'extrinsics' (n, 4, 4) WORLD -> CAMERA,
                         'width', 'height'}
    'smpl'              {'poses_root' (n, 3), 'poses_body' (n, 69), 'trans' (n, 3) metres,
                         'betas' (10,)}: world-frame SMPL of the subject
    'kp2d'              (n, 24, 2) the SMPL joints projected into the image
    'bboxes'            {'bboxes' (n, 4) x_min y_min x_max y_max, 'invalid_idxs' (k,)}

Camera-frame ground truth (`gt_camera_frame`), as EMDB's evaluation computes it: the world mesh
SMPL(poses, betas) + trans of the subject's body, then x_cam = R x + t with the frame's extrinsics
[R | t]; global joint rotations (the local ones composed down the kinematic chain) become R · G,
so the root becomes R_ext · R_root. The camera frame is OpenCV's (x right, y down, z forward).

Why one module: the file layout, the checks of each key and the world -> camera convention belong
together; the metrics themselves are `neuhmr_jax.evaluation`'s.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Optional

import numpy as np

from imphmr_jax.cli import UnknownNameError, expand_path
from neuhmr_jax.data.common import (CameraFrameBody, Fields, camera_frame_smpl, gt_body_for,
                                    read_pickle)

log = logging.getLogger(__name__)

GENDERS = ("female", "male", "neutral")
SPLITS = ("emdb1", "emdb2", "all")
NUM_BETAS = 10
_SUBJECT_DIR = re.compile(r"^P\d+$")


@dataclasses.dataclass
class Sequence:
    """One EMDB sequence (arrays float64 unless said otherwise; n = n_frames).

    path: the *_data.pkl file. folder: the sequence folder. subject: 'P<k>' and sequence_id: the
    sequence folder's name (from the path). name: the pickle's 'name'.
    good_frames_mask: (n,) bool. intrinsics (3, 3); extrinsics (n, 4, 4) world -> camera;
    width, height: pixels. poses_root (n, 3), poses_body (n, 69) axis-angle; trans (n, 3);
    betas (10,). kp2d (n, 24, 2). bboxes (n, 4) xyxy; invalid_bbox_idxs (k,) int.
    image_paths: n paths '<folder>/images/%05d.jpg' (not checked to exist).
    """

    path: str
    folder: str
    subject: str
    sequence_id: str
    name: str
    gender: str
    emdb1: bool
    emdb2: bool
    n_frames: int
    good_frames_mask: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    width: int
    height: int
    poses_root: np.ndarray
    poses_body: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    kp2d: np.ndarray
    bboxes: np.ndarray
    invalid_bbox_idxs: np.ndarray
    image_paths: list

    @property
    def poses(self) -> np.ndarray:
        """(n, 72) world-frame SMPL pose: [poses_root, poses_body]."""
        return np.concatenate([self.poses_root, self.poses_body], axis=1)

    @property
    def good_frames(self) -> np.ndarray:
        """(k,) indices of the good frames."""
        return np.flatnonzero(self.good_frames_mask)


def data_file(folder) -> str:
    """'<root>/P<k>/<seq>' -> '<root>/P<k>/<seq>/P<k>_<seq>_data.pkl'."""
    folder = os.path.normpath(os.fspath(folder))
    seq = os.path.basename(folder)
    subject = os.path.basename(os.path.dirname(folder))
    return os.path.join(folder, f"{subject}_{seq}_data.pkl")


def load_sequence(path) -> Sequence:
    """Read and check one sequence.

    path: its '*_data.pkl', or the sequence folder (the file name is then
    '<subject>_<sequence>_data.pkl' as in EMDB's layout).
    Raises FileNotFoundError (missing file) or InputError (unreadable file, missing key, wrong
    type or shape), each naming the file (and the key).
    """
    path = expand_path(os.fspath(path))
    if os.path.isdir(path):
        path = data_file(path)
    raw = read_pickle(path, "EMDB sequence")
    f = Fields(raw, path)
    n = f.integer("n_frames", minimum=1)
    cam = f.sub("camera")
    smpl = f.sub("smpl")
    boxes = f.sub("bboxes")
    betas = smpl.array("betas", (None,) if np.ndim(smpl.get("betas")) == 1 else (1, None))
    if betas.size != NUM_BETAS:
        raise smpl.error("betas", f"must hold {NUM_BETAS} values, got shape {betas.shape}")
    invalid = boxes.array("invalid_idxs", (None,), dtype=np.int64,
                          value=np.asarray(boxes.get("invalid_idxs")).reshape(-1))
    folder = os.path.dirname(os.path.abspath(path))
    seq = Sequence(
        path=path,
        folder=folder,
        subject=os.path.basename(os.path.dirname(folder)),
        sequence_id=os.path.basename(folder),
        name=f.string("name"),
        gender=f.string("gender", GENDERS),
        emdb1=f.boolean("emdb1"),
        emdb2=f.boolean("emdb2"),
        n_frames=n,
        good_frames_mask=f.array("good_frames_mask", (n,), dtype=bool),
        intrinsics=cam.array("intrinsics", (3, 3)),
        extrinsics=cam.array("extrinsics", (n, 4, 4)),
        width=cam.integer("width", minimum=1),
        height=cam.integer("height", minimum=1),
        poses_root=smpl.array("poses_root", (n, 3)),
        poses_body=smpl.array("poses_body", (n, 69)),
        trans=smpl.array("trans", (n, 3)),
        betas=betas.reshape(NUM_BETAS),
        kp2d=f.array("kp2d", (n, 24, 2)),
        bboxes=boxes.array("bboxes", (n, 4)),
        invalid_bbox_idxs=invalid,
        image_paths=[os.path.join(folder, "images", f"{i:05d}.jpg") for i in range(n)],
    )
    rot = seq.extrinsics[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", rot, rot) - np.eye(3)).max()
    if err > 1e-3 or np.abs(seq.extrinsics[:, 3] - [0, 0, 0, 1]).max() > 1e-6:
        raise cam.error("extrinsics", "must be rigid 4x4 transforms [R | t; 0 0 0 1] with R a "
                        f"rotation (max |RᵀR - I| = {err:.2g})")
    return seq


def find_sequences(root, split: Optional[str] = "emdb1") -> list:
    """All sequences under an EMDB root, optionally of one split, sorted by subject and name.

    Scans '<root>/P<k>/<sequence>/P<k>_<sequence>_data.pkl'. A sequence folder without its data
    file is skipped with a warning.

    Args:
      root: the folder holding P0 ... P9.
      split: 'emdb1' (the camera-relative benchmark; the default), 'emdb2', or 'all' / None.
    Returns:
      [Sequence]. Raises FileNotFoundError when root is missing or holds no sequence, and
      UnknownNameError for an unknown split.
    """
    split = "all" if split is None else split
    if split not in SPLITS:
        raise UnknownNameError(f"unknown EMDB split {split!r}; known: {list(SPLITS)}")
    root = expand_path(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"EMDB root folder not found: {root} (the folder that holds "
                                "P0 ... P9)")
    found = []
    for subject in sorted(os.listdir(root)):
        subject_dir = os.path.join(root, subject)
        if not (_SUBJECT_DIR.match(subject) and os.path.isdir(subject_dir)):
            continue
        for seq_name in sorted(os.listdir(subject_dir)):
            folder = os.path.join(subject_dir, seq_name)
            if not os.path.isdir(folder):
                continue
            path = data_file(folder)
            if not os.path.isfile(path):
                log.warning("EMDB: %s has no %s; skipped", folder, os.path.basename(path))
                continue
            found.append(load_sequence(path))
    if not found:
        raise FileNotFoundError(f"no EMDB sequences under {root}: expected "
                                "<root>/P<k>/<sequence>/P<k>_<sequence>_data.pkl")
    if split == "all":
        return found
    return [s for s in found if getattr(s, split)]


def gt_camera_frame(seq: Sequence, body_for_gender, *, frames=None, vertices: bool = True,
                    chunk: int = 128) -> CameraFrameBody:
    """The sequence's ground truth in the camera frame.

    Args:
      seq: a `Sequence`.
      body_for_gender: a BodyModel used whatever the subject's gender, or a mapping gender ->
        BodyModel from which seq.gender's body is taken (EMDB poses the ground truth with the
        subject's gendered SMPL; the embedded default bodies have no genders).
      frames: optional frame indices (e.g. seq.good_frames); default all frames.
      vertices: also pose the mesh.
    Returns:
      CameraFrameBody: root_rotmat (k, 3, 3) = R_ext · R_root, global_rotmats (k, 24, 3, 3),
      joints (k, 24, 3), vertices (k, V, 3) or None, frames (k,).
    """
    body, _ = gt_body_for(seq.gender, body_for_gender, None)  # a mapping or one body
    return camera_frame_smpl(body, seq.poses, seq.betas, seq.trans, seq.extrinsics,
                             frames=frames, vertices=vertices, chunk=chunk)
