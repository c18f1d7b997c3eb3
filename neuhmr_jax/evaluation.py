"""Video evaluation of per-frame SMPL predictions: EMDB's official protocol and the 3DPW video
protocol (docs/video_evaluation.md).

EMDB (`evaluate_sequence`, `evaluate_emdb`), as EMDB's own evaluation code computes it:
  * sequences with 'emdb1' set; only the frames of 'good_frames_mask';
  * ground truth: the subject's SMPL (GT-gender body) posed in the world and moved into the camera
    frame with the world -> camera extrinsics (`emdb.gt_camera_frame`); prediction: the
    prediction body (EMDB's HybrIK baseline: neutral) posed with the camera-frame pose and β,
    WITHOUT translation (EMDB ignores the predicted translation; it only matters for jitter);
  * joints: the 24 SMPL skeleton joints; vertices: the whole mesh;
  * pelvis = (J[1] + J[2]) / 2 (the hips) of each side, subtracted from its joints and vertices;
  * MPJPE, PVE (mm) on those; PA-MPJPE, PA-PVE with the similarity Procrustes fitted on the 24
    joints and applied to the joints and the vertices;
  * MPJAE (deg): geodesic angle between the global (kinematic-chain-composed) rotations of joints
    MPJAE_JOINTS; PA-MPJAE: the same after rotating the prediction by the Procrustes rotation;
  * jitter (per sequence): mean jerk of the predicted joints (camera frame, no translation, not
    pelvis-aligned) over the good frames taken as consecutive, joints JITTER_IGNORED_JOINTS
    "zeroed" the way EMDB does (their jerk is 0 but they stay in the mean over 24 joints), fps 30,
    reported in EMDB's printed unit 10 m/s³ (m/s³ / 10). 'jitter_gt' is the same for the ground
    truth (with its translation), a reference for the motion's own jerk;
  * pooling (`pool`): per-frame errors concatenated over all sequences and averaged
    (frame-weighted); jitter averaged over sequences.

3DPW video protocol (`evaluate_threedpw_track`, `evaluate_threedpw`), as VIBE-style video methods
report it: one track per person, frames with 'campose_valid'; ground truth posed with the camera-
frame root rotation R_cam · R_root and no translation; joints: the 24 SMPL joints with the hip
midpoint as pelvis, or, with a `j_regressor` (SPIN's J_regressor_h36m.npy, 17 × V), the 14 LSP
joints regressed from the mesh with the midpoint of the LSP hips as pelvis; MPJPE, PA-MPJPE; PVE
between the two translation-free meshes without any alignment (VIBE); acceleration error
(mm/frame²) on the pelvis-centred joints over windows of three consecutive valid frames.

Synthetic video split (`evaluate_clip`, `evaluate_synthetic`): the held-out clips of
`neuhmr_jax.data.synthetic_clips`, every frame evaluated. Prediction and ground truth are posed
with the SAME body (the clip's) from their camera-frame pose and β without translation; both are
centred at their hip midpoint as for EMDB (`compare_bodies`: MPJPE, PA-MPJPE, PVE, PA-PVE, MPJAE,
PA-MPJAE), plus the per-joint MPJPE ('joint_mpjpe', (T, 24) mm), the acceleration error on the
centred joints (every window of three frames) and EMDB's jitter of both sides at the clip's fps
(both without translation, so 'jitter' and 'jitter_gt' compare directly). Each result carries the
clip's motion 'family' (`pool_by(results, 'family')` pools per family).

Bodies: predictions use `body_pred`; the ground truth uses `gt_bodies` — None (the same body for
every gender: the embedded default bodies have no genders, so results with them are not
comparable with published numbers), one BodyModel, or a mapping gender -> BodyModel.

Units: positions in metres in, errors in millimetres out; angles in degrees; jitter in 10 m/s³;
acceleration error in mm/frame².

Why one module: the three protocols share the posing of predictions, the result layout, pooling,
the tables, the figure and writing; the dataset readers are `neuhmr_jax.data`, the command line
`neuhmr_jax.eval`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from imphmr_jax import metrics as _metrics
from imphmr_jax.cli import InputError
from neuhmr_jax.data import emdb, threedpw
from neuhmr_jax.data.common import (CameraFrameBody, padded_size, forward_frames,
                                    global_rotations, gt_body_for, pose_rotmats)
from smpl_jax import joint_sets as _js

log = logging.getLogger(__name__)

EMDB_FPS = 30.0
# EMDB's SMPL_OR_JOINTS: pelvis, hips, knees, shoulders, elbows.
MPJAE_JOINTS = (0, 1, 2, 4, 5, 16, 17, 18, 19)
# EMDB's default ignored joints of the jitter: pelvis, ankles, feet, wrists, hands.
JITTER_IGNORED_JOINTS = (0, 7, 8, 10, 11, 20, 21, 22, 23)
SMPL_HIPS = (1, 2)  # left, right hip of the SMPL skeleton: pelvis = their midpoint
JITTER_UNIT = 10.0  # EMDB prints jerk (m/s³) / 10, "10 m/s³"

UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm", "pve": "mm", "pa_pve": "mm", "mpjae": "deg",
         "pa_mpjae": "deg", "accel_error": "mm/frame^2", "jitter": "10 m/s^3",
         "jitter_gt": "10 m/s^3"}
FRAME_METRICS = ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae", "accel_error")
SEQUENCE_METRICS = ("jitter", "jitter_gt")
EMDB_METRICS = ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae", "jitter", "jitter_gt")
THREEDPW_METRICS = ("mpjpe", "pa_mpjpe", "pve", "accel_error")
BLOCK = 256  # frames posed and compared at once (bounds the memory of long sequences)


# --------------------------------------------------------------------------- predictions
def _prediction(pred_pose, pred_betas, n_frames, frames, who):
    """(pose over all n_frames or over `frames`, betas) -> rotmats (k, 24, 3, 3), betas for the k
    evaluated frames ((k, NB) or (NB,))."""
    rot = pose_rotmats(pred_pose)
    t = rot.shape[0]
    k = len(frames)
    if t == n_frames:
        sel = np.asarray(frames)
    elif t == k:
        sel = np.arange(k)
    else:
        raise ValueError(f"{who}: the prediction has {t} frames; expected {n_frames} (every "
                         f"frame) or {k} (the evaluated frames)")
    betas = np.asarray(pred_betas, np.float64)
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    if betas.ndim == 2:
        if betas.shape[0] != t:
            raise ValueError(f"{who}: pred_betas has {betas.shape[0]} frames but pred_pose {t}")
        betas = betas[sel]
    elif betas.ndim != 1:
        raise ValueError(f"{who}: pred_betas must be (NB,) or (T, NB), got {betas.shape}")
    return rot[sel], betas


def _betas_block(betas, s, e):
    return betas[s:e] if betas.ndim == 2 else betas


def predicted_bodies(body_pred, rotmats, betas, *, vertices=True, chunk=128) -> CameraFrameBody:
    """The prediction body posed with camera-frame rotations and β, without translation.

    rotmats: (k, 24, 3, 3) (or axis-angle, see `pose_rotmats`); betas (NB,) or (k, NB)."""
    rot = pose_rotmats(rotmats)
    verts, joints = forward_frames(body_pred, rot, betas, vertices=vertices, chunk=chunk)
    glob = global_rotations(rot, body_pred.parents)
    return CameraFrameBody(root_rotmat=glob[:, 0], global_rotmats=glob, joints=joints,
                           vertices=verts, frames=np.arange(rot.shape[0]))


def _np(x):
    return np.asarray(x, np.float64)


def _centre(points, joints, hips):
    return points - _js.pelvis_of(joints, hips)[:, None, :]


# --------------------------------------------------------------------------- EMDB
def _pad_frames(arrays, size):
    """Pad each (k, ...) array to `size` frames by repeating its last frame (keeps the padded
    frames well-conditioned for Procrustes); a few padded shapes mean few compiled programs."""
    out = []
    for a in arrays:
        a = np.asarray(a, np.float32)
        if a.shape[0] < size:
            a = np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)])
        out.append(a)
    return out


@jax.jit
def _emdb_errors(pred_joints, gt_joints, pred_verts, gt_verts, pred_rot, gt_rot):
    """compare_bodies' computation on (padded) float32 arrays."""
    pj = _centre(pred_joints, pred_joints, SMPL_HIPS)
    pv = _centre(pred_verts, pred_joints, SMPL_HIPS)
    gj = _centre(gt_joints, gt_joints, SMPL_HIPS)
    gv = _centre(gt_verts, gt_joints, SMPL_HIPS)
    _, (_, r_pa, _) = _metrics.similarity_procrustes(pj, gj, return_transform=True)
    pred_rot_pa = jnp.einsum("nij,nkjl->nkil", r_pa, pred_rot)
    return {
        "mpjpe": _metrics.mpjpe(pj, gj),
        "pa_mpjpe": _metrics.pa_mpjpe(pj, gj),
        "pve": _metrics.pve(pv, gv),
        "pa_pve": _metrics.pve(_metrics.pa_transform_points(pj, gj, pv), gv),
        "mpjae": _metrics.mpjae(pred_rot, gt_rot, MPJAE_JOINTS),
        "pa_mpjae": _metrics.mpjae(pred_rot_pa, gt_rot, MPJAE_JOINTS),
    }


def compare_bodies(pred: CameraFrameBody, gt: CameraFrameBody) -> dict:
    """EMDB's per-frame errors between two posed sequences of SMPL bodies in one frame.

    Both sides are centred at their own hip midpoint (joints and vertices); PA variants use the
    similarity fitted on the 24 joints (applied to joints, vertices and, for PA-MPJAE, the global
    rotations). Needs vertices on both sides.
    Returns {'mpjpe', 'pa_mpjpe', 'pve', 'pa_pve' (mm), 'mpjae', 'pa_mpjae' (deg)}: (k,) each.
    """
    if pred.vertices is None or gt.vertices is None:
        raise ValueError("compare_bodies needs the vertices of both sides (vertices=True)")
    if pred.vertices.shape != gt.vertices.shape:
        raise ValueError(f"prediction and ground-truth meshes differ: {pred.vertices.shape} vs "
                         f"{gt.vertices.shape}; both bodies must share one mesh topology")
    k = pred.joints.shape[0]
    padded = _pad_frames((pred.joints, gt.joints, pred.vertices, gt.vertices,
                          pred.global_rotmats, gt.global_rotmats), padded_size(k, BLOCK))
    return {name: _np(v)[:k] for name, v in _emdb_errors(*padded).items()}


def sequence_jitter(joints, fps=EMDB_FPS) -> float:
    """EMDB's jitter of one sequence of (T, 24, 3) joints in metres: the mean over frames of
    `metrics.jitter` with JITTER_IGNORED_JOINTS zeroed, in 10 m/s³. NaN when T < 4."""
    joints = np.asarray(joints, np.float64)
    if joints.shape[0] < 4:
        return math.nan
    # Jerk ignores a constant offset; removing it first keeps float32 rounding small.
    joints = joints - joints.mean(axis=(0, 1))
    return float(np.mean(_np(_metrics.jitter(joints, fps, JITTER_IGNORED_JOINTS)))) / JITTER_UNIT


def evaluate_sequence(pred_pose, pred_betas, seq: emdb.Sequence, body_pred, gt_bodies=None, *,
                      fps: float = EMDB_FPS, block: int = BLOCK, chunk: int = 128) -> dict:
    """EMDB's metrics of one sequence (see the module doc), over its good frames.

    Args:
      pred_pose: camera-frame SMPL pose of every frame (n_frames) or of the good frames only:
        (T, 24, 3) / (T, 72) axis-angle or (T, 24, 3, 3) rotation matrices.
      pred_betas: (10,) or (T, 10) (the same T as pred_pose).
      seq: an `emdb.Sequence`.
      body_pred: BodyModel of the prediction (EMDB's baselines: the neutral SMPL).
      gt_bodies: body of the ground truth: None (body_pred, whatever the gender), a BodyModel,
        or a mapping gender -> BodyModel (seq.gender's is used).
      fps: frame rate for the jitter (EMDB: 30).
    Returns:
      dict: 'mpjpe', 'pa_mpjpe', 'pve', 'pa_pve' (mm), 'mpjae', 'pa_mpjae' (deg): (k,) arrays
      over the k good frames; 'jitter', 'jitter_gt' (floats, 10 m/s³); 'frames' (k,) their
      indices; 'name', 'protocol' ('emdb'), 'gt_body' (which body posed the ground truth),
      'n_frames'.
    """
    frames = seq.good_frames
    if frames.size == 0:
        raise ValueError(f"{seq.path}: 'good_frames_mask' selects no frame")
    rot, betas = _prediction(pred_pose, pred_betas, seq.n_frames, frames, f"EMDB {seq.name}")
    body_gt, gt_label = gt_body_for(seq.gender, gt_bodies, body_pred)
    per = {k: [] for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjae", "pa_mpjae")}
    pred_joints, gt_joints = [], []
    for s in range(0, frames.size, block):
        e = min(s + block, frames.size)
        gt = emdb.gt_camera_frame(seq, body_gt, frames=frames[s:e], chunk=chunk)
        pred = predicted_bodies(body_pred, rot[s:e], _betas_block(betas, s, e), chunk=chunk)
        for k, v in compare_bodies(pred, gt).items():
            per[k].append(v)
        pred_joints.append(pred.joints)
        gt_joints.append(gt.joints)
    out = {k: np.concatenate(v) for k, v in per.items()}
    out["jitter"] = sequence_jitter(np.concatenate(pred_joints), fps)
    out["jitter_gt"] = sequence_jitter(np.concatenate(gt_joints), fps)
    out.update(name=seq.name, protocol="emdb", frames=frames, gt_body=gt_label,
               n_frames=seq.n_frames)
    return out


def _lookup_prediction(predictions, key, *args):
    if callable(predictions):
        pred = predictions(*args)
    else:
        if key not in predictions:
            raise KeyError(f"no prediction for {key!r}; predictions has "
                           f"{sorted(predictions)[:10]}{' ...' if len(predictions) > 10 else ''}")
        pred = predictions[key]
    if isinstance(pred, Mapping):
        return pred["pose"], pred["betas"]
    pose, betas = pred
    return pose, betas


def evaluate_emdb(sequences, predictions, body_pred, gt_bodies=None, *, split: str = "emdb1",
                  fps: float = EMDB_FPS, out_dir: Optional[str] = None,
                  progress: bool = False) -> dict:
    """EMDB's protocol over many sequences: evaluate each, pool, optionally write the results.

    Args:
      sequences: an EMDB root folder (read with `emdb.find_sequences(root, split)`) or a list of
        `emdb.Sequence`.
      predictions: mapping sequence name (the pickle's 'name', e.g. 'P0_09_outdoor_walk') ->
        {'pose', 'betas'} or (pose, betas), or a callable(seq) -> one of those; pose and betas
        as `evaluate_sequence` takes them.
      body_pred, gt_bodies, fps: as `evaluate_sequence`.
      out_dir: if given, `write_results` writes summary.json, per_frame.json and table.md there.
    Returns:
      The pooled summary (`pool`), with 'split' and 'out_dir'.
    """
    if isinstance(sequences, (str, os.PathLike)):
        sequences = emdb.find_sequences(sequences, split)
    results = {}
    for i, seq in enumerate(sequences):
        pose, betas = _lookup_prediction(predictions, seq.name, seq)
        results[seq.name] = evaluate_sequence(pose, betas, seq, body_pred, gt_bodies, fps=fps)
        if progress:
            r = results[seq.name]
            log.info("EMDB %d/%d %s: MPJPE %.1f mm, PA-MPJPE %.1f mm over %d frames", i + 1,
                     len(sequences), seq.name, r["mpjpe"].mean(), r["pa_mpjpe"].mean(),
                     r["frames"].size)
    return _pool_and_write(results, split, out_dir)


# --------------------------------------------------------------------------- 3DPW
def load_j_regressor(j_regressor, num_vertices: int) -> Optional[np.ndarray]:
    """None, a (17, V) array, or a path to a .npy holding one (SPIN's J_regressor_h36m.npy)."""
    if j_regressor is None:
        return None
    if isinstance(j_regressor, (str, os.PathLike)):
        path = os.fspath(j_regressor)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"J_regressor file not found: {path}")
        j_regressor = np.load(path, allow_pickle=False)
    reg = np.asarray(j_regressor, np.float64)
    if reg.shape != (len(_js.H36M17_NAMES), num_vertices):
        raise ValueError(f"j_regressor must be (17, {num_vertices}) (Human3.6M joints x the "
                         f"body's vertices), got {reg.shape}")
    return reg


def _threedpw_joints(verts, joints24, reg):
    """Pelvis-centred evaluation joints: LSP-14 from the H36M regressor (pelvis = LSP hips) or
    the 24 SMPL joints (pelvis = SMPL hips)."""
    if reg is None:
        return _centre(joints24, joints24, SMPL_HIPS)
    lsp = jnp.einsum("kv,nvc->nkc", reg, verts)[:, np.asarray(_js.H36M_TO_J14)]
    return _centre(lsp, lsp, _js.LSP_HIPS)


@jax.jit
def _threedpw_errors(pred_verts, pred_joints24, gt_verts, gt_joints24, reg):
    """Per-frame MPJPE, PA-MPJPE, PVE and the centred joints, on (padded) float32 arrays."""
    pj = _threedpw_joints(pred_verts, pred_joints24, reg)
    gj = _threedpw_joints(gt_verts, gt_joints24, reg)
    return ({"mpjpe": _metrics.mpjpe(pj, gj), "pa_mpjpe": _metrics.pa_mpjpe(pj, gj),
             "pve": _metrics.pve(pred_verts, gt_verts)}, pj, gj)


def evaluate_threedpw_track(pred_pose, pred_betas, seq: threedpw.Sequence, person: int,
                            body_pred, gt_bodies=None, *, j_regressor=None, block: int = BLOCK,
                            chunk: int = 128) -> dict:
    """3DPW video metrics of one person (track) of a sequence, over its 'campose_valid' frames.

    Args:
      pred_pose, pred_betas: as `evaluate_sequence` (every frame of the sequence, or the valid
        frames of this person only).
      seq: a `threedpw.Sequence`; person: index into seq.people.
      body_pred, gt_bodies: as `evaluate_sequence` (3DPW genders: 'male' / 'female').
      j_regressor: None (24 SMPL joints, hip-midpoint pelvis) or a (17, V) Human3.6M regressor
        (array or .npy path): then the 14 LSP joints, LSP-hip pelvis, as VIBE.
    Returns:
      dict: 'mpjpe', 'pa_mpjpe', 'pve' (mm) (k,) over the valid frames; 'accel_error'
      (mm/frame²) over the windows of three consecutive valid frames; 'frames', 'name'
      ('<sequence>_<person>'), 'protocol' ('3dpw'), 'joints' ('smpl24' / 'lsp14'), 'gt_body',
      'n_frames'.
    """
    who = seq.people[person]
    frames = who.valid_frames
    name = seq.track_name(person)
    if frames.size == 0:
        raise ValueError(f"{seq.path}: person {person} has no frame with 'campose_valid'")
    rot, betas = _prediction(pred_pose, pred_betas, seq.n_frames, frames, f"3DPW {name}")
    body_gt, gt_label = gt_body_for(who.gender, gt_bodies, body_pred)
    gt_rot = pose_rotmats(who.poses)[frames]
    gt_rot[:, 0] = np.einsum("nij,njk->nik", seq.cam_poses[frames, :3, :3], gt_rot[:, 0])
    reg = None
    per = {"mpjpe": [], "pa_mpjpe": [], "pve": []}
    pred_j, gt_j = [], []
    for s in range(0, frames.size, block):
        e = min(s + block, frames.size)
        gv, g24 = forward_frames(body_gt, gt_rot[s:e], who.betas, chunk=chunk)
        pv, p24 = forward_frames(body_pred, rot[s:e], _betas_block(betas, s, e), chunk=chunk)
        if pv.shape != gv.shape:
            raise ValueError(f"prediction and ground-truth meshes differ: {pv.shape} vs "
                             f"{gv.shape}; both bodies must share one mesh topology")
        if s == 0:
            reg = load_j_regressor(j_regressor, gv.shape[1])
        k = e - s
        padded = _pad_frames((pv, p24, gv, g24), padded_size(k, block))
        errors, pj, gj = _threedpw_errors(*padded, None if reg is None else
                                          np.asarray(reg, np.float32))
        for metric, v in errors.items():
            per[metric].append(_np(v)[:k])
        pred_j.append(_np(pj)[:k])
        gt_j.append(_np(gj)[:k])
    out = {metric: np.concatenate(v) for metric, v in per.items()}
    pred_j, gt_j = np.concatenate(pred_j), np.concatenate(gt_j)
    if frames.size >= 3:
        consecutive = frames[2:] - frames[:-2] == 2
        out["accel_error"] = _np(_metrics.accel_error(pred_j, gt_j))[consecutive]
    else:
        out["accel_error"] = np.zeros((0,))
    out.update(name=name, protocol="3dpw", frames=frames, gt_body=gt_label,
               joints="smpl24" if reg is None else "lsp14", n_frames=seq.n_frames)
    return out


def evaluate_threedpw(sequences, predictions, body_pred, gt_bodies=None, *, split: str = "test",
                      j_regressor=None, out_dir: Optional[str] = None) -> dict:
    """The 3DPW video protocol over many sequences (every person a track), pooled.

    Args:
      sequences: a 3DPW root folder (read with `threedpw.find_sequences(root, split)`) or a
        list of `threedpw.Sequence`.
      predictions: mapping track name '<sequence>_<person>' -> {'pose', 'betas'} or
        (pose, betas), or a callable(seq, person) -> one of those.
      body_pred, gt_bodies, j_regressor: as `evaluate_threedpw_track`.
      out_dir: if given, `write_results` writes there.
    Returns:
      The pooled summary (`pool`), with 'split' and 'out_dir'.
    """
    if isinstance(sequences, (str, os.PathLike)):
        sequences = threedpw.find_sequences(sequences, split)
    if isinstance(j_regressor, (str, os.PathLike)):
        j_regressor = load_j_regressor(j_regressor, int(body_pred.v_template.shape[0]))
    results = {}
    for seq in sequences:
        for p in range(len(seq.people)):
            if seq.people[p].valid_frames.size == 0:
                log.warning("3DPW %s: no frame with 'campose_valid'; track skipped",
                            seq.track_name(p))
                continue
            pose, betas = _lookup_prediction(predictions, seq.track_name(p), seq, p)
            results[seq.track_name(p)] = evaluate_threedpw_track(
                pose, betas, seq, p, body_pred, gt_bodies, j_regressor=j_regressor)
    return _pool_and_write(results, split, out_dir)


# --------------------------------------------------------------------------- synthetic clips
SYNTHETIC_GT_BODY = "the clip's body (as the prediction)"


def _init_like(pred, who: str):
    """(poses, betas, source) of an `Init`-like prediction: an object with .poses / .betas (an
    `inits.Init`), a mapping with 'poses' (or 'pose') and 'betas', or a (pose, betas) pair."""
    if hasattr(pred, "poses") and hasattr(pred, "betas"):
        return pred.poses, pred.betas, str(getattr(pred, "source", who))
    if isinstance(pred, Mapping):
        return pred["poses"] if "poses" in pred else pred["pose"], pred["betas"], who
    pose, betas = pred[:2]
    return pose, betas, who


def evaluate_clip(pred_pose, pred_betas, clip, body, *, source: Optional[str] = None,
                  block: int = BLOCK, chunk: int = 128) -> dict:
    """The synthetic protocol's metrics of one clip (module doc), over every frame.

    Args:
      pred_pose: (T, 24, 3) / (T, 72) camera-frame axis-angle or (T, 24, 3, 3) matrices.
      pred_betas: (10,) or (T, 10).
      clip: a `synthetic_clips.SyntheticClip` (poses, betas, family, fps are read).
      body: the clip's BodyModel: it poses the prediction and the ground truth.
      source: where the prediction came from, for the frame-count error.
    Returns:
      dict: 'mpjpe', 'pa_mpjpe', 'pve', 'pa_pve' (mm), 'mpjae', 'pa_mpjae' (deg): (T,);
      'joint_mpjpe' (T, 24) mm; 'accel_error' (T - 2,) mm/frame²; 'jitter', 'jitter_gt'
      (10 m/s³ at the clip's fps); 'frames', 'name', 'protocol' ('synthetic'), 'gt_body',
      'n_frames', 'family', 'fps'.
    """
    t = clip.num_frames
    n = int(np.shape(pred_pose)[0])
    if n != t:
        raise InputError(f"{source or 'the prediction'} holds {n} frames but clip {clip.name} "
                         f"has {t}: one prediction per frame is needed")
    rot, betas = _prediction(pred_pose, pred_betas, t, np.arange(t), f"clip {clip.name}")
    gt_rot, gt_betas = pose_rotmats(clip.poses), np.asarray(clip.betas, np.float64)
    per, pred_j, gt_j = {}, [], []
    for s in range(0, t, block):
        e = min(s + block, t)
        gt = predicted_bodies(body, gt_rot[s:e], _betas_block(gt_betas, s, e), chunk=chunk)
        pred = predicted_bodies(body, rot[s:e], _betas_block(betas, s, e), chunk=chunk)
        for k, v in compare_bodies(pred, gt).items():
            per.setdefault(k, []).append(v)
        pred_j.append(pred.joints)
        gt_j.append(gt.joints)
    out = {k: np.concatenate(v) for k, v in per.items()}
    pred_j, gt_j = np.concatenate(pred_j), np.concatenate(gt_j)
    pc, gc = _centre(pred_j, pred_j, SMPL_HIPS), _centre(gt_j, gt_j, SMPL_HIPS)
    # Per-joint MPJPE: `metrics.mpjpe` of every joint on its own (a one-joint set per row).
    joints = pc.shape[1]
    out["joint_mpjpe"] = _np(_metrics.mpjpe(pc.reshape(-1, 1, 3), gc.reshape(-1, 1, 3))
                             ).reshape(t, joints)
    out["accel_error"] = _np(_metrics.accel_error(pc, gc)) if t >= 3 else np.zeros((0,))
    out["jitter"] = sequence_jitter(pred_j, clip.fps)
    out["jitter_gt"] = sequence_jitter(gt_j, clip.fps)
    out.update(name=clip.name, protocol="synthetic", frames=np.arange(t),
               gt_body=SYNTHETIC_GT_BODY, n_frames=t, family=str(clip.family),
               fps=float(clip.fps))
    return out


def evaluate_synthetic(clips, predictions, body, *, progress: bool = False) -> dict:
    """The synthetic protocol over clips; returns {clip name: `evaluate_clip` result} (pool it
    with `pool`, per family with `pool_by(results, 'family')`, write it with `write_results`).

    Args:
      clips: a clips folder (read with `synthetic_clips.read_clips`) or a list of SyntheticClip.
      predictions: mapping clip name -> `Init`-like (an `inits.Init`, {'poses', 'betas'} or
        (poses, betas)), or a callable(clip) -> one of those; every frame of the clip.
      body: the clips' BodyModel (`synthetic_clips.clips_info(dir)['body']`).
    """
    if isinstance(clips, (str, os.PathLike)):
        from neuhmr_jax.data.synthetic_clips import read_clips
        clips = read_clips(os.fspath(clips))
    results = {}
    for i, clip in enumerate(clips):
        if callable(predictions):
            pred = predictions(clip)
        elif clip.name not in predictions:
            raise KeyError(f"no prediction for clip {clip.name!r}; predictions has "
                           f"{sorted(predictions)[:10]}{' ...' if len(predictions) > 10 else ''}")
        else:
            pred = predictions[clip.name]
        pose, betas, source = _init_like(pred, f"prediction of {clip.name}")
        results[clip.name] = r = evaluate_clip(pose, betas, clip, body, source=source)
        if progress:
            log.info("synthetic %d/%d %s (%s): MPJPE %.1f mm, PA-MPJPE %.1f mm", i + 1,
                     len(clips), clip.name, clip.family, r["mpjpe"].mean(), r["pa_mpjpe"].mean())
    return results


# --------------------------------------------------------------------------- pooling and output


def _pool_and_write(results: Mapping[str, Any], split, out_dir: Optional[str]) -> dict:
    """`pool` the per-sequence results, label them with the split and output folder, and write
    them there when one is given (the last step of `evaluate_emdb` and `evaluate_threedpw`)."""
    pooled = pool(results)
    pooled["split"] = split
    pooled["out_dir"] = out_dir
    if out_dir is not None:
        write_results(out_dir, results, pooled)
    return pooled


def _finite_mean(values):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return (float(values.mean()), float(values.std())) if values.size else (None, None)


def pool(results_by_sequence: Mapping[str, Mapping[str, Any]]) -> dict:
    """Pool per-sequence results (`evaluate_sequence` / `evaluate_threedpw_track` outputs).

    Per-frame metrics are concatenated over all sequences and averaged (frame-weighted, EMDB's
    and VIBE's pooling); per-sequence metrics (jitter) are averaged over the sequences that have
    a value (EMDB's pooling). 'sequence_weighted' gives the mean of the per-sequence means for
    comparison.

    Returns:
      {'protocol', 'metrics': {name: value}, 'std': {name: std over frames / sequences},
       'sequence_weighted': {name: value}, 'units': {name: unit}, 'num_frames',
       'num_sequences', 'per_sequence': {name: {'num_frames', metric: mean, 'gt_body'}},
       'gt_body': sorted distinct ground-truth body labels}; when every result has a
      'joint_mpjpe' (the synthetic protocol) also 'joint_mpjpe' (J,) frame-weighted per-joint
      MPJPE and 'joint_names', and per sequence its 'joint_mpjpe' (and 'family' when given).
    """
    if not results_by_sequence:
        raise ValueError("pool: no sequence results")
    protocols = sorted({str(r.get("protocol", "")) for r in results_by_sequence.values()})
    if len(protocols) != 1:
        raise ValueError(f"pool: results of different protocols {protocols} cannot be pooled")
    names = [m for m in FRAME_METRICS + SEQUENCE_METRICS
             if all(m in r for r in results_by_sequence.values())]
    per_sequence = {}
    for seq_name, r in results_by_sequence.items():
        row = {"num_frames": int(np.asarray(r["frames"]).size), "gt_body": r.get("gt_body")}
        if "family" in r:
            row["family"] = str(r["family"])
        if "joint_mpjpe" in r:
            row["joint_mpjpe"] = _joint_means([r])
        for m in names:
            row[m] = (_finite_mean(r[m])[0] if m in FRAME_METRICS
                      else (float(r[m]) if np.isfinite(r[m]) else None))
        per_sequence[seq_name] = row
    metrics, std, seq_weighted = {}, {}, {}
    for m in names:
        if m in FRAME_METRICS:
            values = np.concatenate([np.asarray(r[m], np.float64).reshape(-1)
                                     for r in results_by_sequence.values()])
        else:
            values = np.asarray([r[m] for r in results_by_sequence.values()], np.float64)
        metrics[m], std[m] = _finite_mean(values)
        seq_weighted[m] = _finite_mean([row[m] for row in per_sequence.values()
                                        if row[m] is not None])[0]
    out = {
        "protocol": protocols[0],
        "metrics": metrics,
        "std": std,
        "sequence_weighted": seq_weighted,
        "units": {m: UNITS[m] for m in names},
        "num_frames": int(sum(row["num_frames"] for row in per_sequence.values())),
        "num_sequences": len(per_sequence),
        "per_sequence": per_sequence,
        "gt_body": sorted({str(row["gt_body"]) for row in per_sequence.values()}),
    }
    if all("joint_mpjpe" in r for r in results_by_sequence.values()):
        out["joint_mpjpe"] = _joint_means(results_by_sequence.values())
        out["joint_names"] = list(joint_names(len(out["joint_mpjpe"])))
    return out


def _joint_means(results) -> list:
    """Frame-weighted per-joint MPJPE (mm) of results holding 'joint_mpjpe' (k, J)."""
    rows = [np.asarray(r["joint_mpjpe"], np.float64) for r in results]
    stacked = np.concatenate([a.reshape(-1, a.shape[-1]) for a in rows])
    return [float(v) for v in stacked.mean(axis=0)]


def joint_names(num_joints: int = 24) -> tuple:
    """Names of the first `num_joints` SMPL skeleton joints (`smpl_jax.joint_sets`)."""
    names = tuple(_js.SMPL_JOINT_NAMES)
    return names[:num_joints] if num_joints <= len(names) else tuple(
        f"joint_{j}" for j in range(num_joints))


def pool_by(results_by_sequence: Mapping[str, Mapping[str, Any]], key: str) -> dict:
    """`pool` the sequences grouped by the value of `key` in their results (e.g. 'family' of the
    synthetic clips): {value: pooled summary}, sorted by value. A result without `key` is a
    ValueError naming the sequence."""
    groups: dict = {}
    for name, r in results_by_sequence.items():
        if key not in r:
            raise ValueError(f"pool_by: the result of {name!r} has no {key!r}")
        groups.setdefault(str(r[key]), {})[name] = r
    return {value: pool(groups[value]) for value in sorted(groups)}


_LABELS = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "pve": "PVE", "pa_pve": "PA-PVE",
           "mpjae": "MPJAE", "pa_mpjae": "PA-MPJAE", "accel_error": "Accel err",
           "jitter": "Jitter", "jitter_gt": "Jitter (GT)"}


def format_table(pooled: Mapping[str, Any], *, per_sequence: bool = True,
                 digits: int = 1) -> str:
    """A Markdown table of a `pool` summary: one row per sequence (optional), then the pooled row
    (frame-weighted; jitter averaged over sequences)."""
    names = list(pooled["metrics"])

    def fmt(v):
        return "-" if v is None else f"{v:.{digits}f}"

    head = "| sequence | frames | " + " | ".join(
        f"{_LABELS.get(m, m)} ({pooled['units'][m]})" for m in names) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(names)]
    if per_sequence:
        for seq_name, row in pooled["per_sequence"].items():
            lines.append(f"| {seq_name} | {row['num_frames']} | "
                         + " | ".join(fmt(row[m]) for m in names) + " |")
    lines.append(f"| **all ({pooled['num_sequences']} sequences)** | {pooled['num_frames']} | "
                 + " | ".join(f"**{fmt(pooled['metrics'][m])}**" for m in names) + " |")
    return "\n".join(lines)


def metric_label(name: str) -> str:
    """The printed name of a metric ('pa_mpjpe' -> 'PA-MPJPE')."""
    return _LABELS.get(name, name)


def summary_row(pooled: Mapping[str, Any]) -> dict:
    """A `pool` summary as one table row: {'num_frames', metric: pooled value}."""
    return {"num_frames": pooled["num_frames"], **pooled["metrics"]}


def format_comparison(groups: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      units: Mapping[str, str], *, first_column: str = "sequence",
                      digits: int = 1, bold: Optional[set] = None) -> str:
    """A Markdown table comparing methods: one row per (group, method).

    groups: {group label (a sequence, a motion family, 'all'): {method: row}}, a row being
      {'num_frames', metric: value} (`pool`'s per_sequence rows, or `summary_row(pooled)`).
    units: {metric: unit} (`pool`'s 'units'): the metrics shown, in order.
    bold: group labels whose rows are printed in bold (e.g. the pooled one).
    """
    names = list(units)
    bold = bold or set()

    def fmt(v):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [f"| {first_column} | method | frames | " + " | ".join(
        f"{_LABELS.get(m, m)} ({units[m]})" for m in names) + " |",
        "|---|---|---:|" + "---:|" * len(names)]
    for group, rows in groups.items():
        for method, row in rows.items():
            cells = [fmt(row.get(m)) for m in names]
            if group in bold:
                cells = [f"**{c}**" for c in cells]
                group_cell = f"**{group}**"
            else:
                group_cell = group
            lines.append(f"| {group_cell} | {method} | {row['num_frames']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_joint_table(columns: Mapping[str, Any], *, digits: int = 1) -> str:
    """A Markdown table of per-joint MPJPE (mm): one row per SMPL joint, one column per entry of
    `columns` ({label: (J,) values}, e.g. {method: pooled['joint_mpjpe']}), then their mean."""
    labels = list(columns)
    values = [np.asarray(columns[c], np.float64).reshape(-1) for c in labels]
    if not values:
        raise ValueError("format_joint_table: no columns")
    names = joint_names(values[0].size)
    lines = ["| joint | " + " | ".join(f"{c} (mm)" for c in labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for j, name in enumerate(names):
        lines.append(f"| {j} {name} | " + " | ".join(f"{v[j]:.{digits}f}" for v in values)
                     + " |")
    lines.append("| **mean** | " + " | ".join(f"**{v.mean():.{digits}f}**" for v in values)
                 + " |")
    return "\n".join(lines)


def comparison_markdown(pooled_by_method: Mapping[str, Mapping[str, Any]],
                        by_family: Optional[Mapping[str, Mapping[str, Any]]] = None, *,
                        title: str = "Evaluation", intro: tuple = ()) -> tuple:
    """Markdown comparing methods: (the pooled table, the whole page).

    pooled_by_method: {method: `pool` summary} over the same sequences. by_family: optional
    {method: `pool_by(results, 'family')`}. The page: `title`, the `intro` lines, then the
    pooled table, one row per (family, method), the per-joint MPJPE when every summary has it
    (`format_joint_table`) and one row per (sequence, method)."""
    methods = list(pooled_by_method)
    first = pooled_by_method[methods[0]]
    units = first["units"]
    label = f"all ({first['num_sequences']} sequences)"
    pooled_table = format_comparison(
        {label: {m: summary_row(p) for m, p in pooled_by_method.items()}}, units, bold={label})
    lines = [f"# {title}", "", *intro, "",
             f"Pooled: per-frame errors over all {first['num_frames']} evaluated frames of "
             f"{first['num_sequences']} sequences (frame-weighted); jitter: mean over sequences.",
             "", "## Pooled", "", pooled_table, ""]
    if by_family:
        families = by_family[methods[0]]
        lines += ["## By motion family", "", format_comparison(
            {f"{f} ({families[f]['num_sequences']})":
             {m: summary_row(by_family[m][f]) for m in methods} for f in families},
            units, first_column="family (clips)"), ""]
    if all("joint_mpjpe" in p for p in pooled_by_method.values()):
        lines += ["## Per joint", "", "MPJPE of each joint, both sides centred at their hip "
                  "midpoint, pooled over all frames.", "",
                  format_joint_table({m: p["joint_mpjpe"] for m, p in pooled_by_method.items()}),
                  ""]
    groups = {}
    for seq, row in first["per_sequence"].items():
        key = f"{seq} ({row['family']})" if row.get("family") else seq
        groups[key] = {m: p["per_sequence"][seq] for m, p in pooled_by_method.items()}
    lines += ["## Per sequence", "", format_comparison(groups, units), ""]
    return pooled_table, "\n".join(lines)


def plot_errors(path, results_by_method: Mapping[str, Mapping[str, Any]],
                pooled_by_method: Mapping[str, Mapping[str, Any]], *,
                max_curves: int = 12) -> str:
    """A PNG comparing methods: per-joint MPJPE bars (the pooled MPJPE / PA-MPJPE / PVE / PA-PVE
    when the results have no per-joint errors), and the per-frame MPJPE of the first
    `max_curves` sequences, one curve per method. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    methods = list(results_by_method)
    pooled = pooled_by_method
    seqs = list(results_by_method[methods[0]])
    shown = seqs[:max_curves]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = plt.figure(figsize=(max(12.0, 4.0 * ncols), 4.2 + 2.6 * nrows))
    grid = fig.add_gridspec(1 + nrows, ncols, height_ratios=[1.6] + [1.0] * nrows)
    ax = fig.add_subplot(grid[0, :])
    if all("joint_mpjpe" in pooled[m] for m in methods):
        labels = joint_names(len(pooled[methods[0]]["joint_mpjpe"]))
        values = {m: pooled[m]["joint_mpjpe"] for m in methods}
        ax.set_title("per-joint MPJPE (hip-midpoint aligned), pooled")
    else:
        keys = [k for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve")
                if k in pooled[methods[0]]["metrics"]]
        labels = [metric_label(k) for k in keys]
        values = {m: [pooled[m]["metrics"][k] or 0.0 for k in keys] for m in methods}
        ax.set_title("pooled errors")
    x, width = np.arange(len(labels)), 0.8 / len(methods)
    for i, m in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, values[m], width, label=m)
    many = len(labels) > 6
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60 if many else 0, ha="right" if many else "center",
                       fontsize=8)
    ax.set_ylabel("mm")
    ax.legend(fontsize=8)
    for k, s in enumerate(shown):
        a = fig.add_subplot(grid[1 + k // ncols, k % ncols])
        for m in methods:
            r = results_by_method[m][s]
            a.plot(np.asarray(r["frames"]), np.asarray(r["mpjpe"]), label=m, lw=1.2)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_title(s, fontsize=9)
        a.set_xlabel("frame", fontsize=8)
        a.set_ylabel("MPJPE (mm)", fontsize=8)
        a.tick_params(labelsize=7)
    if len(shown) < len(seqs):
        fig.suptitle(f"per-frame MPJPE of the first {len(shown)} of {len(seqs)} sequences",
                     fontsize=9, y=0.995)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None  # strict JSON has no NaN
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_text(path, text: str) -> str:
    """Write `text` to `path` atomically; returns the path."""
    _write_text(os.fspath(path), text)
    return os.fspath(path)


def write_json(path, obj, *, indent: Optional[int] = 2) -> str:
    """Write `obj` as strict JSON (numpy arrays as lists, non-finite values as null) atomically;
    returns the path."""
    path = os.fspath(path)
    _write_text(path, json.dumps(_jsonable(obj), indent=indent, sort_keys=indent is not None)
                + "\n")
    return path


def write_results(out_dir, results_by_sequence: Mapping[str, Mapping[str, Any]],
                  pooled: Optional[Mapping[str, Any]] = None,
                  meta: Optional[Mapping[str, Any]] = None) -> dict:
    """Write summary.json (the pooled summary, plus `meta` under 'meta'), per_frame.json
    ({sequence: {'frames': [...], metric: [...], 'jitter': ...}}; non-finite values as null)
    and table.md (`format_table`). Returns {'summary', 'per_frame', 'table'} paths."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    pooled = dict(pool(results_by_sequence) if pooled is None else pooled)
    if meta is not None:
        pooled["meta"] = dict(meta)
    per_frame = {}
    for seq_name, r in results_by_sequence.items():
        per_frame[seq_name] = {k: v for k, v in r.items()
                               if k in FRAME_METRICS + SEQUENCE_METRICS
                               or k in ("frames", "gt_body", "joints", "n_frames", "family",
                                        "fps", "joint_mpjpe")}
    paths = {"summary": os.path.join(out_dir, "summary.json"),
             "per_frame": os.path.join(out_dir, "per_frame.json"),
             "table": os.path.join(out_dir, "table.md")}
    _write_text(paths["summary"], json.dumps(_jsonable(pooled), indent=2, sort_keys=True) + "\n")
    _write_text(paths["per_frame"], json.dumps(_jsonable(per_frame)) + "\n")
    _write_text(paths["table"], format_table(pooled) + "\n")
    return paths


__all__ = ["EMDB_FPS", "FRAME_METRICS", "JITTER_IGNORED_JOINTS", "MPJAE_JOINTS",
           "SEQUENCE_METRICS", "SYNTHETIC_GT_BODY", "UNITS", "compare_bodies",
           "comparison_markdown", "evaluate_clip", "evaluate_emdb", "evaluate_sequence",
           "evaluate_synthetic", "evaluate_threedpw", "evaluate_threedpw_track",
           "format_comparison", "format_joint_table", "format_table", "joint_names",
           "load_j_regressor", "metric_label", "plot_errors", "pool", "pool_by",
           "predicted_bodies", "sequence_jitter", "summary_row", "write_json", "write_results",
           "write_text"]
