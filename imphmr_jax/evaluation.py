"""Evaluation protocols as data, a jit-able per-batch evaluator and an evaluation loop.

The protocols, metrics and their sources are described in docs/evaluation.md#protocols.

Conventions (SPIN `eval.py`, PARE `eval_utils` / `compute_error`; the joint rows and pelvis
indices named below are `smpl_jax.joint_sets` constants):
  * Predictions: the NEUTRAL body posed with the predicted (rotmat, betas), no translation. Joints
    come from the body's Human3.6M regressor ('h36m17', 17 rows); the pelvis is H36M joint 0 and
    the evaluated joints are LSP-14 (`H36M_TO_J14`) or the 17 of MPI-INF-3DHP (`H36M_TO_J17`),
    each minus that pelvis.
  * Ground truth from SMPL parameters ('pw3d', 'pw3d_occ', 'synthetic'): the GT mesh from the
    batch's `pose` (axis-angle, camera-frame global orientation) and `betas`, through the same
    regressor, the same joints minus the GT's H36M pelvis. Which body makes the GT mesh is an
    explicit choice (`gendered_gt`): the neutral body (PARE's default, `DATASET.USE_GENDER=False`)
    or the male/female body per sample (SPIN). With gendered GT a sample whose gender is unknown
    (-1) uses the neutral body; missing male/female bodies are an error unless
    `allow_neutral_fallback` is set, in which case the neutral body is used and the summary says
    so.
  * Ground truth from dataset joints ('h36m_p1', 'h36m_p2', 'mpi_inf_3dhp'): the batch's
    `joints_3d` (B, 24, 4) in SPIN's 24-joint GT order, rows `J24_TO_J14` / `J24_TO_J17`, minus GT
    joint 14 (the pelvis row SPIN's preprocessing centres H36M/3DHP on, so its stored GT has it at
    the origin; subtracting it here makes camera-frame joints and root-centred ones give the same
    numbers).
  * `pelvis='hips'` instead aligns both sets at the midpoint of their LSP hips (LSP-14 rows 2 and
    3), as HMR/VIBE's `align_by_pelvis`; the default is SPIN's H36M-root alignment.
  * PVE (PARE `compute_error_verts`): mean vertex distance between the predicted and GT meshes with
    NO alignment and NO translation (root offsets from β count); `pve_root_aligned=True` subtracts
    each mesh's H36M pelvis first (as some repositories do, PyMAF#90).
  * Metrics are per-sample millimetres; PA-MPJPE uses SPIN's similarity Procrustes.

Dataset frame selection (H36M P1 = S9/S11 all cameras every 5th frame, P2 = camera 60457274;
3DPW test split; 3DPW-OCC; 3DHP test) is the dataset builders' job; `Protocol.notes` records it.

Why one module: the protocols, the per-batch evaluator and the loop that streams batches through
it share one set of joint and pelvis conventions; split apart, a reader would have to hold three
files to check that predictions and ground truth are centred the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

import smpl_jax
from smpl_jax import joint_sets as _js
from smpl_jax.joint_sets import H36M_PELVIS, J24_PELVIS, LSP_HIPS, centre_at, pelvis_of
from imphmr_jax import figures
from imphmr_jax import metrics as _metrics
from smpl_jax.rotations import axis_angle_to_matrix, rot6d_to_matrix

log = logging.getLogger(__name__)

GT_SOURCES = ("smpl", "joints_3d")
# joint set -> (rows of h36m17, rows of SPIN's 24 GT joints) that give its joints
JOINT_SETS = {"lsp14": (_js.H36M_TO_J14, _js.J24_TO_J14),
              "mpi17": (_js.H36M_TO_J17, _js.J24_TO_J17)}
PELVIS_MODES = ("h36m_root", "hips")
METRIC_NAMES = ("mpjpe", "pa_mpjpe", "pve")
_LABEL_KEYS = ("pose", "betas", "gender", "joints_3d")  # the batch fields evaluation reads


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (hashable, usable as a static jit argument).

    Fields:
      name: key in `PROTOCOLS`.
      gt_source: 'smpl' (GT mesh from the batch's pose/betas) or 'joints_3d' (dataset joints).
      joint_set: 'lsp14' (14 LSP joints) or 'mpi17' (the 17 joints of SPIN's 3DHP evaluation).
      pelvis: 'h36m_root' (SPIN) or 'hips' (midpoint of the LSP hips of each set).
      pve: report PVE (needs gt_source 'smpl').
      pve_root_aligned: subtract each mesh's H36M pelvis before PVE (default off, as PARE).
      use_joint_confidence: with 'joints_3d', weight joints by joints_3d[..., 3] > 0 (SPIN and
        PARE do not; off for the standard protocols).
      notes: which frames the dataset builder must provide, and the source of the numbers.
    """

    name: str
    gt_source: str = "smpl"
    joint_set: str = "lsp14"
    pelvis: str = "h36m_root"
    pve: bool = False
    pve_root_aligned: bool = False
    use_joint_confidence: bool = False
    notes: str = ""

    def __post_init__(self):
        if self.gt_source not in GT_SOURCES:
            raise ValueError(f"Protocol {self.name!r}: gt_source must be one of {GT_SOURCES}, got "
                             f"{self.gt_source!r}")
        if self.joint_set not in JOINT_SETS:
            raise ValueError(f"Protocol {self.name!r}: joint_set must be one of "
                             f"{tuple(JOINT_SETS)}, got {self.joint_set!r}")
        if self.pelvis not in PELVIS_MODES:
            raise ValueError(f"Protocol {self.name!r}: pelvis must be one of {PELVIS_MODES}, got "
                             f"{self.pelvis!r}")
        if self.pve and self.gt_source != "smpl":
            raise ValueError(f"Protocol {self.name!r}: PVE needs a GT mesh (gt_source='smpl')")

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("mpjpe", "pa_mpjpe") + (("pve",) if self.pve else ())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "pw3d": Protocol(
        "pw3d", gt_source="smpl", joint_set="lsp14", pve=True,
        notes="3DPW test split (SPIN 3dpw_test.npz, 35,515 frames; PARE filters 3dpw-all to the "
              "test sequences). GT mesh from pose/betas; 14 LSP joints via the H36M regressor; "
              "PVE without alignment (PARE)."),
    "pw3d_occ": Protocol(
        "pw3d_occ", gt_source="smpl", joint_set="lsp14", pve=True,
        notes="3DPW-OCC (PARE's occlusion subset of 3DPW); same metrics as pw3d."),
    "h36m_p1": Protocol(
        "h36m_p1", gt_source="joints_3d", joint_set="lsp14",
        notes="Human3.6M protocol 1: S9 and S11, all cameras, every 5th frame. GT = "
              "joints_3d[J24_TO_J14] minus GT pelvis (J24 row 14)."),
    "h36m_p2": Protocol(
        "h36m_p2", gt_source="joints_3d", joint_set="lsp14",
        notes="Human3.6M protocol 2: as P1, frontal camera 60457274 only."),
    "mpi_inf_3dhp": Protocol(
        "mpi_inf_3dhp", gt_source="joints_3d", joint_set="mpi17",
        notes="MPI-INF-3DHP test set: 17 joints (H36M_TO_J17 / J24_TO_J17) minus the pelvis."),
    "synthetic": Protocol(
        "synthetic", gt_source="smpl", joint_set="lsp14", pve=True,
        notes="The project's synthetic set: GT mesh from the same default body, LSP-14 via the "
              "H36M regressor as 3DPW, plus PVE."),
}


def get_protocol(protocol) -> Protocol:
    """A `Protocol` or its name -> `Protocol` (unknown names are a ValueError listing the known)."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# --------------------------------------------------------------------------- ground-truth bodies
def gt_body_choice(protocol, bodies: Mapping[str, Any], gendered_gt: bool = False,
                   allow_neutral_fallback: bool = False) -> str:
    """Which bodies make the GT meshes: 'neutral', 'gendered', 'neutral (fallback: ...)', or
    'dataset joints' for protocols that do not use a GT mesh.

    Raises a ValueError when the neutral body is missing, or when gendered GT is asked for without
    male and female bodies and no fallback is allowed.
    """
    protocol = get_protocol(protocol)
    if "neutral" not in bodies:
        raise ValueError("bodies must contain a 'neutral' body (predictions always use it); got "
                         f"keys {sorted(bodies)}")
    if protocol.gt_source != "smpl":
        return "dataset joints"
    if not gendered_gt:
        return "neutral"
    missing = [g for g in ("male", "female") if g not in bodies or bodies[g] is None]
    if not missing:
        return "gendered"
    if allow_neutral_fallback:
        return f"neutral (fallback: no {' or '.join(missing)} body given)"
    raise ValueError(
        f"gendered ground truth was requested for protocol {protocol.name!r} but bodies lack "
        f"{missing}; pass bodies={{'neutral': ..., 'male': ..., 'female': ...}} (e.g. "
        f"smpl_jax.load('SMPL_MALE.pkl')), or set gendered_gt=False (neutral GT, PARE's default) "
        f"or allow_neutral_fallback=True")


def _h36m17(body, rotmat, betas):
    out = smpl_jax.forward(body, rotmat, betas, extra_joints=("h36m17",))
    return out.vertices, out.joints[:, _js.NUM_SKELETON_JOINTS:]


def _protocol_centred(joints, root, protocol):
    """(B, J, 3) protocol joints centred at the protocol's pelvis: the midpoint of their own LSP
    hips ('hips') or `root` (B, 3), the set's root joint ('h36m_root')."""
    return centre_at(joints, pelvis_of(joints, LSP_HIPS) if protocol.pelvis == "hips" else root)


def _select_and_centre(h36m17, protocol):
    """(B, 17, 3) regressed H36M joints -> (protocol joints centred at the protocol's pelvis,
    the H36M pelvis (B, 3))."""
    root = pelvis_of(h36m17, H36M_PELVIS)
    joints = h36m17[:, np.asarray(JOINT_SETS[protocol.joint_set][0])]
    return _protocol_centred(joints, root, protocol), root


def _gt_from_joints3d(joints_3d, protocol):
    joints_3d = jnp.asarray(joints_3d)
    if joints_3d.ndim != 3 or joints_3d.shape[1:] != (24, 4):
        raise ValueError(f"protocol {protocol.name!r}: batch['joints_3d'] must be (B, 24, 4) "
                         f"(SPIN's 24 GT joints + confidence), got {joints_3d.shape}")
    rows = np.asarray(JOINT_SETS[protocol.joint_set][1])
    joints = _protocol_centred(joints_3d[:, rows, :3], pelvis_of(joints_3d[..., :3], J24_PELVIS),
                               protocol)
    mask = (joints_3d[:, rows, 3] > 0) if protocol.use_joint_confidence else None
    return joints, mask


def _batch_field(batch, name, protocol):
    if name not in batch:
        raise KeyError(f"protocol {protocol.name!r} needs batch[{name!r}]; the batch has "
                       f"{sorted(batch)}")
    return jnp.asarray(batch[name])


def gt_mesh(protocol, batch, bodies, *, gendered_gt=False, allow_neutral_fallback=False):
    """GT vertices (B, V, 3) and H36M-17 joints (B, 17, 3) from batch pose (B, 72) / betas (B, 10).

    With gendered GT (and male/female bodies), gender 0 uses the male body, 1 the female body and
    -1 (unknown) the neutral body. All bodies must share the mesh topology.
    """
    protocol = get_protocol(protocol)
    choice = gt_body_choice(protocol, bodies, gendered_gt, allow_neutral_fallback)
    pose = _batch_field(batch, "pose", protocol)
    betas = _batch_field(batch, "betas", protocol)
    if pose.ndim != 2 or pose.shape[1] != 72:
        raise ValueError(f"batch['pose'] must be (B, 72) axis-angle, got {pose.shape}")
    rot = axis_angle_to_matrix(pose.reshape(pose.shape[0], 24, 3))
    verts, joints = _h36m17(bodies["neutral"], rot, betas)
    if choice == "gendered":
        gender = _batch_field(batch, "gender", protocol).astype(jnp.int32)
        for g, key in ((0, "male"), (1, "female")):
            v_g, j_g = _h36m17(bodies[key], rot, betas)
            if v_g.shape != verts.shape:
                raise ValueError(f"the {key} body has {v_g.shape[1]} vertices but the neutral "
                                 f"body {verts.shape[1]}; all bodies must share one topology")
            sel = (gender == g)[:, None, None]
            verts = jnp.where(sel, v_g, verts)
            joints = jnp.where(sel, j_g, joints)
    return verts, joints


def _check_batch(protocol, batch, bodies, gendered_gt, allow_neutral_fallback):
    """Eager validation with messages that name the protocol and the missing field."""
    gt_body_choice(protocol, bodies, gendered_gt, allow_neutral_fallback)
    needed = ("pose", "betas") if protocol.gt_source == "smpl" else ("joints_3d",)
    if protocol.gt_source == "smpl" and gendered_gt and "male" in bodies and "female" in bodies:
        needed += ("gender",)
    for name in needed:
        _batch_field(batch, name, protocol)


def _evaluate(protocol, pred_rotmat, pred_betas, batch, bodies, valid, gendered_gt,
              allow_neutral_fallback, pred_vertices):
    """evaluate_batch's computation; also returns the predicted mesh (B, V, 3)."""
    pred_rotmat = jnp.asarray(pred_rotmat)
    if pred_rotmat.ndim != 4 or pred_rotmat.shape[1:] != (24, 3, 3):
        raise ValueError(f"pred_rotmat must be (B, 24, 3, 3), got {pred_rotmat.shape}")
    p_verts, p_h36m = _h36m17(bodies["neutral"], pred_rotmat, jnp.asarray(pred_betas))
    if pred_vertices is not None:
        p_verts = jnp.asarray(pred_vertices, p_verts.dtype)
    pred_j, pred_root = _select_and_centre(p_h36m, protocol)
    mask = None
    if protocol.gt_source == "smpl":
        g_verts, g_h36m = gt_mesh(protocol, batch, bodies, gendered_gt=gendered_gt,
                                  allow_neutral_fallback=allow_neutral_fallback)
        gt_j, gt_root = _select_and_centre(g_h36m, protocol)
    else:
        gt_j, mask = _gt_from_joints3d(_batch_field(batch, "joints_3d", protocol), protocol)
    gt_j = gt_j.astype(pred_j.dtype)
    out = {"mpjpe": _metrics.mpjpe(pred_j, gt_j, mask),
           "pa_mpjpe": _metrics.pa_mpjpe(pred_j, gt_j, mask)}
    if protocol.pve:
        if protocol.pve_root_aligned:
            out["pve"] = _metrics.pve(centre_at(p_verts, pred_root), centre_at(g_verts, gt_root))
        else:
            out["pve"] = _metrics.pve(p_verts, g_verts)
    if valid is not None:
        ok = jnp.asarray(valid).astype(bool)
        out = {k: jnp.where(ok, v, jnp.nan) for k, v in out.items()}
    return {k: v.astype(jnp.float32) for k, v in out.items()}, p_verts


_evaluate_jit = jax.jit(_evaluate, static_argnames=("protocol", "gendered_gt",
                                                    "allow_neutral_fallback"))


def _computation_key(protocol: Protocol) -> Protocol:
    """The protocol without its name and notes, so that protocols computing the same thing
    ('pw3d', 'pw3d_occ', 'synthetic'; 'h36m_p1', 'h36m_p2') share one compiled program."""
    return dataclasses.replace(protocol, name=f"{protocol.gt_source}:{protocol.joint_set}",
                               notes="")


def evaluate_batch(protocol, pred_rotmat, pred_betas, batch, bodies, *, valid=None,
                   gendered_gt=False, allow_neutral_fallback=False, pred_vertices=None):
    """Per-sample metrics of one batch, in millimetres.

    Jit-able as ``jax.jit(evaluate_batch, static_argnames=('protocol', 'gendered_gt',
    'allow_neutral_fallback'))`` (pass `bodies` as an argument); `evaluate_batch_jit` is that,
    with one compiled program shared by protocols that compute the same thing.

    Args:
      protocol: a `Protocol` or a name in `PROTOCOLS` (static under jit).
      pred_rotmat: (B, 24, 3, 3) predicted SMPL rotations (global orientation in camera frame).
      pred_betas: (B, 10).
      batch: mapping in the pipeline layout (schema.py): 'pose' (B, 72), 'betas' (B, 10) and
        'gender' (B,) for GT-mesh protocols; 'joints_3d' (B, 24, 4) for dataset-joint protocols.
      bodies: {'neutral': BodyModel[, 'male': ..., 'female': ...]}; every body needs the
        'h36m17' regressor.
      valid: optional (B,) bool/0-1; invalid (padding) samples get NaN in every metric.
      gendered_gt, allow_neutral_fallback: the GT body choice (see `gt_body_choice`); static.
      pred_vertices: optional (B, V, 3) predicted mesh (no translation) used for PVE instead of
        the neutral body posed with (pred_rotmat, pred_betas); joints always come from the latter.
    Returns:
      dict name -> (B,) float32: 'mpjpe', 'pa_mpjpe', and 'pve' when the protocol has PVE.
    """
    protocol = get_protocol(protocol)
    _check_batch(protocol, batch, bodies, gendered_gt, allow_neutral_fallback)
    out, _ = _evaluate(protocol, pred_rotmat, pred_betas, batch, bodies, valid, gendered_gt,
                       allow_neutral_fallback, pred_vertices)
    return out


def _labels_only(batch):
    return {k: jnp.asarray(batch[k]) for k in _LABEL_KEYS if k in batch}


def evaluate_batch_jit(protocol, pred_rotmat, pred_betas, batch, bodies, *, valid=None,
                       gendered_gt=False, allow_neutral_fallback=False, pred_vertices=None,
                       return_pred_vertices=False):
    """`evaluate_batch` through one jitted program per computation (same arguments).

    Only the label fields (pose, betas, gender, joints_3d) of `batch` enter the program, so
    batches may carry other fields (images, names). `bodies` is a traced pytree argument.
    return_pred_vertices: also return the predicted mesh (B, V, 3) (for figures).
    """
    protocol = get_protocol(protocol)
    _check_batch(protocol, batch, bodies, gendered_gt, allow_neutral_fallback)
    bodies = {k: v for k, v in bodies.items() if v is not None}
    if not (gendered_gt and protocol.gt_source == "smpl"):
        bodies = {"neutral": bodies["neutral"]}  # unused bodies stay out of the program
    b = jnp.shape(pred_rotmat)[0]
    valid = jnp.ones((b,), bool) if valid is None else jnp.asarray(valid).astype(bool)
    out, verts = _evaluate_jit(_computation_key(protocol), pred_rotmat, pred_betas,
                               _labels_only(batch), bodies, valid,
                               bool(gendered_gt), bool(allow_neutral_fallback), pred_vertices)
    return (out, verts) if return_pred_vertices else out


# --------------------------------------------------------------------------- predictors
def _as_rotmats(mean_pose):
    pose = jnp.asarray(mean_pose, jnp.float32)
    if pose.shape == (24, 3, 3):
        return pose
    if pose.size == 144:
        return rot6d_to_matrix(pose.reshape(24, 6))
    if pose.size == 72:
        return axis_angle_to_matrix(pose.reshape(24, 3))
    raise ValueError("mean pose must be (24, 3, 3) rotation matrices, (144,) SPIN 6D or (72,) "
                     f"axis-angle, got shape {pose.shape}")


def mean_pose_predictor(mean_rotmat, mean_betas, mean_cam) -> Callable:
    """A predict_fn that ignores the image and returns the same (mean) parameters for every sample.

    Args:
      mean_rotmat: (24, 3, 3) rotations, or (144,) SPIN 6D / (72,) axis-angle (e.g. the
        regressor's `spin_default_mean_params()['pose']` or the training set's mean).
      mean_betas: (10,). mean_cam: (3,) [s, tx, ty].
    Returns:
      predict_fn(images (B, H, W, 3)) -> dict(rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3)).
    """
    rot = _as_rotmats(mean_rotmat)
    betas = jnp.asarray(mean_betas, jnp.float32).reshape(-1)
    cam = jnp.asarray(mean_cam, jnp.float32).reshape(3)

    def predict_fn(images):
        b = images.shape[0]
        return {"rotmat": jnp.broadcast_to(rot, (b, 24, 3, 3)),
                "betas": jnp.broadcast_to(betas, (b,) + betas.shape),
                "cam": jnp.broadcast_to(cam, (b, 3))}

    return predict_fn


def _view0(x, expect_ndim):
    x = jnp.asarray(x)
    return x[:, 0] if x.ndim == expect_ndim + 1 else x


# --------------------------------------------------------------------------- the loop
def _to_numpy_batch(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


def labelled_mask(protocol, batch) -> np.ndarray:
    """(B,) bool: the samples that carry the ground truth `protocol` reads (batch['has_smpl'] for
    a GT mesh, batch['has_pose_3d'] for dataset joints). A batch without the flag counts as
    labelled. Samples without labels (e.g. the 2D-only records of a mixed split) would otherwise
    be scored against zero-filled labels."""
    protocol = get_protocol(protocol)
    flag = "has_smpl" if protocol.gt_source == "smpl" else "has_pose_3d"
    n = np.asarray(batch["image"]).shape[0]
    if flag not in batch:
        return np.ones((n,), bool)
    return np.asarray(batch[flag]).reshape(n) > 0


def run_evaluation(predict_fn, batches: Iterable[Mapping[str, Any]], protocol, bodies,
                   out_dir, *, max_figures: int = 8, gendered_gt: bool = False,
                   allow_neutral_fallback: bool = False, progress: bool = True,
                   total: Optional[int] = None) -> dict:
    """Evaluate a predictor over batches; write summary.json, per_sample.jsonl and overlays.

    Args:
      predict_fn: images (B, H, W, 3) ImageNet-normalised -> dict(rotmat (B, 24, 3, 3),
        betas (B, 10), cam (B, 3)[, vertices (B, V, 3)]) for view 0 (a (B, V, ...) output is
        sliced at view 0). Metrics always use the neutral body posed with (rotmat, betas) (SPIN);
        given vertices are only drawn in the overlays.
      batches: iterable of eval batches in the pipeline layout plus 'valid' (B,) (0 for padding)
        and 'index' (B,) (the sample's index in the split).
      protocol: a `Protocol` or a name in `PROTOCOLS`.
      bodies: {'neutral': ...[, 'male', 'female']}.
      out_dir: None = compute only (no files); else written: summary.json (means over valid samples, count, protocol options, GT body
        choice), per_sample.jsonl (one {"index", metrics...} per valid sample, in order) and
        figures/overlays.png (crop | predicted mesh over the crop, for the first `max_figures`
        valid samples; their indices are in the summary). A sample with a non-finite metric is
        written with null there and counted in summary['nonfinite_excluded'], not in the means.
        Samples without the protocol's labels (`labelled_mask`) are skipped and counted in
        summary['unlabelled_excluded'].
      gendered_gt, allow_neutral_fallback: GT body choice (see `gt_body_choice`).
      progress: show a tqdm bar. total: number of batches, for the bar.
    Returns:
      The summary dict.
    """
    from tqdm.auto import tqdm


    protocol = get_protocol(protocol)
    choice = gt_body_choice(protocol, bodies, gendered_gt, allow_neutral_fallback)
    message = f"evaluation protocol {protocol.name!r}: ground truth from {choice}"
    log.info(message)
    if progress:
        tqdm.write(message)
    if out_dir is None:
        max_figures = 0
    else:
        os.makedirs(out_dir, exist_ok=True)
    faces = np.asarray(bodies["neutral"].faces)
    sums = {k: 0.0 for k in protocol.metrics}
    count, skipped_nonfinite, unlabelled = 0, 0, 0
    fig_images, fig_verts, fig_cams, fig_index, fig_err = [], [], [], [], []
    per_sample_path = os.path.join(out_dir or "", "per_sample.jsonl")
    bar = tqdm(batches, total=total, desc=f"eval {protocol.name}", disable=not progress)
    with (open(per_sample_path + ".tmp", "w") if out_dir else contextlib.nullcontext(None)) \
            as per_sample:
        for batch in bar:
            batch = _to_numpy_batch(batch)
            for key in ("image", "valid", "index"):
                if key not in batch:
                    raise KeyError(f"run_evaluation: every batch needs {key!r}; got "
                                   f"{sorted(batch)}")
            pred = predict_fn(jnp.asarray(batch["image"]))
            rotmat = _view0(pred["rotmat"], 4)
            betas = _view0(pred["betas"], 2)
            valid = batch["valid"].astype(bool)
            labelled = labelled_mask(protocol, batch)
            unlabelled += int(np.sum(valid & ~labelled))
            valid = valid & labelled
            res, pred_verts = evaluate_batch_jit(
                protocol, rotmat, betas, batch, bodies, valid=valid, gendered_gt=gendered_gt,
                allow_neutral_fallback=allow_neutral_fallback, return_pred_vertices=True)
            res = {k: np.asarray(v, np.float64) for k, v in res.items()}
            for i in np.flatnonzero(valid):
                row = {"index": int(batch["index"][i])}
                row.update({k: float(res[k][i]) for k in protocol.metrics})
                if not all(np.isfinite(row[k]) for k in protocol.metrics):
                    skipped_nonfinite += 1
                    log.warning("sample %d has a non-finite metric %s; excluded from the means",
                                row["index"], row)
                    # strict JSON has no NaN/inf: a non-finite metric is written as null
                    row = {k: (v if np.isfinite(v) else None) for k, v in row.items()}
                else:
                    for k in protocol.metrics:
                        sums[k] += row[k]
                    count += 1
                if per_sample is not None:
                    per_sample.write(json.dumps(row) + "\n")
            if count:
                bar.set_postfix({k: f"{sums[k] / count:.1f}" for k in protocol.metrics})
            if len(fig_index) < max_figures and valid.any():
                ids = np.flatnonzero(valid)[:max_figures - len(fig_index)]
                verts = _view0(pred["vertices"], 3) if "vertices" in pred else pred_verts
                fig_verts.append(np.asarray(verts)[ids])
                fig_cams.append(np.asarray(_view0(pred["cam"], 2))[ids])
                fig_images.append(figures.denormalize(batch["image"][ids]))
                fig_index.extend(int(j) for j in batch["index"][ids])
                fig_err.extend(float(res["pa_mpjpe"][j]) if "pa_mpjpe" in res else None
                               for j in ids)
    if out_dir is not None:
        os.replace(per_sample_path + ".tmp", per_sample_path)
    figure_path = None
    if fig_index:
        figure_path = os.path.join(out_dir, "figures", "overlays.png")
        figures.mesh_overlay_grid(
            np.concatenate(fig_images), np.concatenate(fig_verts), faces, np.concatenate(fig_cams),
            figure_path, labels=figures.overlay_labels(
                fig_index, fig_err if all(e is not None for e in fig_err) else None))
    summary = {
        "protocol": protocol.name,
        "protocol_options": protocol.to_dict(),
        "gt_body": choice,
        "gendered_gt": bool(gendered_gt),
        "allow_neutral_fallback": bool(allow_neutral_fallback),
        "count": count,
        "nonfinite_excluded": skipped_nonfinite,
        "unlabelled_excluded": unlabelled,
        "units": "mm",
        "metrics": {k: (sums[k] / count if count else None) for k in protocol.metrics},
        # path relative to out_dir, so the folder can be moved
        "figures": {"overlays": figure_path and os.path.relpath(figure_path, out_dir),
                    "indices": fig_index},
    }
    if out_dir is not None:
        _write_json(os.path.join(out_dir, "summary.json"), summary)
    if progress:
        tqdm.write(f"{protocol.name}: " + ", ".join(
            f"{k} {v:.2f} mm" for k, v in summary["metrics"].items() if v is not None)
            + f" over {count} samples")
    return summary


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of several run_evaluation summaries, e.g. {'model': s1, 'mean pose': s2}."""
    names = []
    for s in summaries.values():
        for k in s["metrics"]:
            if k not in names:
                names.append(k)
    lines = ["| predictor | protocol | count | " + " | ".join(f"{n} (mm)" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for label, s in summaries.items():
        vals = [s["metrics"].get(n) for n in names]
        lines.append(f"| {label} | {s['protocol']} | {s['count']} | " + " | ".join(
            "-" if v is None else f"{v:.1f}" for v in vals) + " |")
    return "\n".join(lines)
