"""Named joint sets, joint names and flip permutations for SMPL-layout bodies.

``smpl_jax.forward(..., extra_joints=names)`` always returns the 24 skeleton joints first, then the
joints of each requested set, in the order requested. The sets:

==========  ====  ===========================================================================
name        rows  source
==========  ====  ===========================================================================
vertex21    21    single mesh vertices (smplx's ``VertexJointSelector`` order: nose, reye, leye,
                  rear, lear, LBigToe, LSmallToe, LHeel, RBigToe, RSmallToe, RHeel, then the
                  left and right fingertips thumb..pinky); ids from the model file's
                  ``vertex_joint_ids`` or, for 6890-vertex SMPL files, :data:`SMPL_VERTEX_JOINT_IDS`
extra9      9     SPIN's ``J_regressor_extra`` (9 x V): :data:`EXTRA9_NAMES`
h36m17      17    ``J_regressor_h36m`` (17 x V): :data:`H36M17_NAMES`
lsp14       14    rows :data:`H36M_TO_J14` of h36m17: :data:`LSP14_NAMES`
spin49      49    SPIN's training set (25 OpenPose + 24 ground-truth joints), picked from the
                  54 joints [skeleton 24, vertex21, extra9] with :data:`SPIN49_FROM_J54`
                  (SPIN's ``JOINT_MAP``); needs vertex21 and extra9
==========  ====  ===========================================================================

So ``forward(model, pose, betas, extra_joints=('spin49',)).joints[:, 24:73]`` are SPIN's 49 joints
in :data:`SPIN49_NAMES` order (``SPIN49_SLICE``), and ``spin49_indices(extra_joints)`` gives the
column indices for any request that contains 'spin49' or both 'vertex21' and 'extra9'. Of those 49,
the first :data:`NUM_OPENPOSE` are OpenPose's and the last :data:`NUM_GT_JOINTS` SPIN's 24
ground-truth joints ("J24", whose first 14 rows are LSP-14); :data:`J24_TO_J14` /
:data:`J24_TO_J17` pick the evaluation joints from them as :data:`H36M_TO_J14` / :data:`H36M_TO_J17`
do from h36m17.

Root alignment: :func:`pelvis_of` takes a set's pelvis (a row such as :data:`H36M_PELVIS` /
:data:`J24_PELVIS`, or the midpoint of the hips :data:`LSP_HIPS`) and :func:`centre_at` subtracts a
root; :func:`pelvis_centred` does both.

The regressor-backed sets (vertex21, extra9, h36m17) are stored in a :class:`~smpl_jax.BodyModel`
under :data:`REGRESSOR_KEYS`; a model that lacks one raises a ``ValueError`` that says how to
provide it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

NUM_SKELETON_JOINTS = 24

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# --- vertex21 -------------------------------------------------------------------------------
VERTEX21_NAMES = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "left_thumb_tip", "left_index_tip", "left_middle_tip", "left_ring_tip", "left_pinky_tip",
    "right_thumb_tip", "right_index_tip", "right_middle_tip", "right_ring_tip", "right_pinky_tip",
)
# Vertex ids of the 6890-vertex SMPL mesh for VERTEX21_NAMES (the published SMPL/SMPL-H ids).
SMPL_VERTEX_JOINT_IDS = (
    332, 6260, 2800, 4071, 583,
    3216, 3226, 3387, 6617, 6624, 6787,
    2746, 2319, 2445, 2556, 2673,
    6191, 5782, 5905, 6016, 6133,
)

# --- extra9 (SPIN J_regressor_extra.npy rows) ------------------------------------------------
EXTRA9_NAMES = (
    "right_hip_lsp", "left_hip_lsp", "neck_lsp", "top_of_head_lsp", "pelvis_mpii", "thorax_mpii",
    "spine_h36m", "jaw_h36m", "head_h36m",
)

# --- Human3.6M 17 (J_regressor_h36m.npy rows) and LSP 14 -------------------------------------
# Row names as SPIN uses the rows: its H36M_TO_J14 takes LSP's right ankle/knee/hip from rows 6/5/4
# and the left ones from rows 3/2/1 (and LSP "neck" from the thorax row 8, "top of head" from 10).
H36M17_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
    "spine", "thorax", "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)
H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
H36M_TO_J14 = H36M_TO_J17[:14]
H36M_PELVIS = 0  # row of h36m17: SPIN's / PARE's evaluation root
LSP14_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "top_of_head",
)

# --- SPIN 49 ----------------------------------------------------------------------------------
NUM_SPIN49 = 49
NUM_OPENPOSE = 25  # SPIN49 rows 0-24: OpenPose's BODY_25 joints
NUM_GT_JOINTS = 24  # SPIN49 rows 25-48: SPIN's 24 ground-truth joints ("J24")
SPIN49_NAMES = (
    "OP Nose", "OP Neck", "OP RShoulder", "OP RElbow", "OP RWrist", "OP LShoulder", "OP LElbow",
    "OP LWrist", "OP MidHip", "OP RHip", "OP RKnee", "OP RAnkle", "OP LHip", "OP LKnee",
    "OP LAnkle", "OP REye", "OP LEye", "OP REar", "OP LEar", "OP LBigToe", "OP LSmallToe",
    "OP LHeel", "OP RBigToe", "OP RSmallToe", "OP RHeel",
    "Right Ankle", "Right Knee", "Right Hip", "Left Hip", "Left Knee", "Left Ankle",
    "Right Wrist", "Right Elbow", "Right Shoulder", "Left Shoulder", "Left Elbow", "Left Wrist",
    "Neck (LSP)", "Top of Head (LSP)", "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)",
    "Jaw (H36M)", "Head (H36M)", "Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear",
)
# For each SPIN49 joint, its index among the 54 joints [skeleton 24 | vertex21 | extra9]
# (0-23 skeleton, 24-44 vertex21, 45-53 extra9). Same table as SPIN's JOINT_MAP.
SPIN49_FROM_J54 = (
    24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50, 51, 52, 53, 24, 26, 25, 28, 27,
)
# SPIN's 49 joints within forward(..., extra_joints=('spin49',)).joints
SPIN49_SLICE = slice(NUM_SKELETON_JOINTS, NUM_SKELETON_JOINTS + NUM_SPIN49)

# --- SPIN's 24 ground-truth joints (J24) -> evaluation sets (SPIN constants.py) ----------------
# Rows of J24 that give the LSP-14 / MPI-INF-3DHP-17 joints (the same joints as H36M_TO_J14/17).
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)
J24_TO_J14 = J24_TO_J17[:14]
J24_PELVIS = 14  # "Pelvis (MPII)": the root SPIN's stored H36M / 3DHP ground truth is centred on
# Right hip, left hip in LSP-14, hence also in J24 (its first 14 rows) and in the J17 set. Their
# midpoint is the pelvis of SPIN's 3D keypoint loss and of HMR/VIBE's `align_by_pelvis`.
LSP_HIPS = (2, 3)

# --- flip permutations (SPIN constants) -------------------------------------------------------
SMPL_JOINTS_FLIP_PERM = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21,
                         20, 23, 22)
SMPL_POSE_FLIP_PERM = tuple(3 * i + k for i in SMPL_JOINTS_FLIP_PERM for k in range(3))
J24_FLIP_PERM = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23,
                 22)
J49_FLIP_PERM = (0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18, 17, 22, 23, 24, 19,
                 20, 21) + tuple(NUM_OPENPOSE + i for i in J24_FLIP_PERM)

# --- set registry -----------------------------------------------------------------------------
# Regressor-backed sets, as stored in BodyModel.regressors: key -> (rows, file key, how to add it).
REGRESSOR_KEYS = {
    "vertex21": (21, "vertex_joint_ids",
                 "store 'vertex_joint_ids' (21 vertex ids) in the model file; 6890-vertex SMPL "
                 "files get the SMPL ids automatically"),
    "extra9": (9, "J_regressor_extra",
               "pass load(..., j_regressor_extra='J_regressor_extra.npy') (SPIN's 9 x V file) or "
               "store 'J_regressor_extra' in the model file"),
    "h36m17": (17, "J_regressor_h36m",
               "pass load(..., j_regressor_h36m='J_regressor_h36m.npy') (SPIN's 17 x V file) or "
               "store 'J_regressor_h36m' in the model file"),
}

JOINT_SET_NAMES = ("vertex21", "extra9", "h36m17", "lsp14", "spin49")
JOINT_SET_SIZES = {"vertex21": 21, "extra9": 9, "h36m17": 17, "lsp14": 14, "spin49": NUM_SPIN49}
JOINT_SET_JOINT_NAMES = {
    "vertex21": VERTEX21_NAMES, "extra9": EXTRA9_NAMES, "h36m17": H36M17_NAMES,
    "lsp14": LSP14_NAMES, "spin49": SPIN49_NAMES,
}
# Which stored regressors each named set reads.
_SET_DEPENDENCIES = {
    "vertex21": ("vertex21",), "extra9": ("extra9",), "h36m17": ("h36m17",),
    "lsp14": ("h36m17",), "spin49": ("vertex21", "extra9"),
}


def normalize_request(extra_joints: str | Iterable[str]) -> tuple[str, ...]:
    """A set name or a sequence of names -> validated tuple of names."""
    if isinstance(extra_joints, str):
        extra_joints = (extra_joints,)
    names = tuple(extra_joints)
    for name in names:
        if name not in JOINT_SET_SIZES:
            raise ValueError(
                f"unknown joint set {name!r} in extra_joints; valid sets: "
                + ", ".join(repr(n) for n in JOINT_SET_NAMES))
    return names


def required_regressors(names: Sequence[str]) -> tuple[str, ...]:
    """Stored regressor keys that the requested sets need, without duplicates, in order."""
    out: list[str] = []
    for name in names:
        for key in _SET_DEPENDENCIES[name]:
            if key not in out:
                out.append(key)
    return tuple(out)


def missing_regressor_message(set_name: str, key: str) -> str:
    rows, file_key, how = REGRESSOR_KEYS[key]
    return (f"joint set {set_name!r} needs the {key!r} regressor ({file_key}, {rows} rows), which "
            f"this body model lacks; to provide it, {how}")


def joint_names(extra_joints: str | Iterable[str] = ()) -> tuple[str, ...]:
    """Names of the joints that ``forward(..., extra_joints=extra_joints)`` returns, in order."""
    names = list(SMPL_JOINT_NAMES)
    for name in normalize_request(extra_joints):
        names.extend(JOINT_SET_JOINT_NAMES[name])
    return tuple(names)


def set_slices(extra_joints: str | Iterable[str] = ()) -> dict[str, slice]:
    """Where each requested set lies along the joint axis of ``forward``'s output."""
    out, start = {}, NUM_SKELETON_JOINTS
    for name in normalize_request(extra_joints):
        out[name] = slice(start, start + JOINT_SET_SIZES[name])
        start += JOINT_SET_SIZES[name]
    return out


def pelvis_of(joints, pelvis: int | tuple[int, int]):
    """The pelvis of a joint set: (..., J, 3) -> (..., 3).

    pelvis: a row (e.g. :data:`H36M_PELVIS`, :data:`J24_PELVIS`) or a pair of rows whose midpoint
    is the pelvis (:data:`LSP_HIPS`: SPIN's pelvis (j2 + j3)/2 of J24 and LSP-14). numpy or jax.
    """
    if isinstance(pelvis, (int, np.integer)):
        return joints[..., pelvis, :]
    i, j = pelvis
    return 0.5 * (joints[..., i, :] + joints[..., j, :])


def centre_at(joints, root):
    """Joints relative to a root point: (..., J, 3) - (..., 3) -> (..., J, 3)."""
    return joints - root[..., None, :]


def pelvis_centred(joints, pelvis: int | tuple[int, int]):
    """(..., J, 3) joints centred at their own pelvis (`pelvis_of`'s row or pair of rows)."""
    return centre_at(joints, pelvis_of(joints, pelvis))


def spin49_indices(extra_joints: str | Iterable[str]) -> np.ndarray:
    """Indices (49,) along the joint axis of ``forward``'s output that give SPIN's 49 joints.

    Works when the request contains 'spin49' (then it is ``arange(s, s + 49)``) or both
    'vertex21' and 'extra9' (then it maps SPIN's JOINT_MAP onto their positions).
    """
    slices = set_slices(extra_joints)
    if "spin49" in slices:
        s = slices["spin49"].start
        return np.arange(s, s + NUM_SPIN49)
    if "vertex21" in slices and "extra9" in slices:
        j54 = np.concatenate([np.arange(NUM_SKELETON_JOINTS),
                              np.arange(slices["vertex21"].start, slices["vertex21"].stop),
                              np.arange(slices["extra9"].start, slices["extra9"].stop)])
        return j54[np.asarray(SPIN49_FROM_J54)]
    raise ValueError("spin49_indices needs extra_joints to contain 'spin49', or both 'vertex21' "
                     f"and 'extra9'; got {tuple(normalize_request(extra_joints))}")
