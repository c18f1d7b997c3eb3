"""ImpHMR's training objective (Sec. 3.4 eq. 5-7, supplementary 6.1): L_reg, L_imag, L_cons.

Described in docs/method.md#losses (weights, normalisation, views, camera prior).

    L_all = L_reg (view 0) + L_imag (view φ, 3D labels) + L_cons (two views, 2D labels only)

Everything is a pure function of arrays (no config objects); weights come in a frozen
`LossWeights` holding the paper's λ names.

Batch labels (names fixed here; the data pipeline produces them), B samples:
    keypoints_2d  (B, 49, 3)  SPIN's 49 joints (25 OpenPose, then 24 GT), x, y in [-1, 1] crop
                              coordinates, then confidence.
    joints_3d     (B, 24, 4)  SPIN's 24 GT joints, root-centred metres, then confidence.
    pose          (B, 72)     SMPL axis-angle, global orientation in the CAMERA frame.
    betas         (B, 10)
    has_smpl      (B,)        float 0/1
    has_pose_3d   (B,)        float 0/1 (a sample with only 2D labels has both 0)
Predictions for one view are dicts with rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3) [s, tx, ty]
and optionally silhouette_logits (B, S, S) — i.e. `ImpHMR` outputs sliced at one view
(`select_view(outputs, v)`).

Normalisation (SPIN:train/trainer.py; docs/method.md#normalisation). SPIN's losses are `mean`s: each
term divides by ALL elements of the samples it looks at, zero-confidence joints included, e.g. the
2D term is Σ conf·(x̂ − x)² / (B·49·2). Per-sample masks (has_smpl, has_pose_3d) select samples as
SPIN's `[has_smpl == 1]` indexing does: the mean is over the selected samples only (n_selected·24·9
for the pose term). A mask that selects nothing gives exactly 0 and a zero gradient (SPIN returns a
constant 0). Masked-out samples never enter the value, so their labels may be anything finite.

Joints from a prediction: `smpl_jax.forward(body, rotmat, betas, extra_joints=('spin49',))`, the
49 SPIN joints; 3D terms use the 24 GT joints (49-set indices 25:) centred at SPIN's pelvis
(j2 + j3)/2 of that 24 set (`joint_sets.LSP_HIPS`; both prediction and label); the 2D term
projects all 49 with `perspective_projection_normalized` at `weak_perspective_to_translation(cam)`.

Views (the sign convention of `geometry.views`: targets for the view rendered at φ use the same φ):
  * L_reg on view 0, which must be rendered at φ = 0 (the input view; 2D labels exist only there).
  * L_imag on view 1 at φ = phis[:, 1]: rotated GT global orientation, unchanged body pose and β,
    GT 3D joints rotated about the pelvis, silhouette of the GT mesh rotated about the root joint.
    No 2D term (there are no 2D labels for an unseen view) and no camera term.
  * L_cons between views 1 and 2 when three views are given (two independent random views, as the
    paper's φ1, φ2 ~ U[0, 2π]), otherwise between views 0 and 1 (docs/method.md#views-and-labels).
Whether each sample gets L_imag or L_cons follows its labels: L_imag's pose/shape/silhouette terms
use has_smpl, its joint term has_pose_3d; L_cons uses the samples with neither label.

The camera prior 60·mean(exp(−10 s)²) is SPIN's (not in the paper; kept, on by
default, since the regressor is SPIN's); it is applied to view 0 only and to every sample.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

import smpl_jax
from imphmr_jax.geometry import camera as cam_lib
from imphmr_jax.geometry import views
from imphmr_jax.render.rasterize import required_tiles, silhouette
from smpl_jax import joint_sets
from smpl_jax.joint_sets import LSP_HIPS, NUM_OPENPOSE
from smpl_jax.numerics import nonzero_denominator
from smpl_jax.rotations import axis_angle_to_matrix


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The paper's λ (supplementary 6.1) = SPIN's 60·(5, 5, 1, 0.001) plus SPIN's camera prior
    weight (docs/method.md#loss-weights).

    lambda_cam / use_cam_prior: SPIN's camera-scale prior, not named by the paper
    (docs/method.md#camera-prior).
    """

    lambda_2d: float = 300.0
    lambda_3d: float = 300.0
    lambda_pose: float = 60.0
    lambda_shape: float = 0.06
    lambda_silh: float = 30.0
    lambda_cam: float = 60.0
    use_cam_prior: bool = True


# --------------------------------------------------------------------------- helpers
def _masked_mean(x, mask=None):
    """SPIN's mean over the samples a (B,) 0/1 mask selects: Σ mask·x / (n_selected · |x[0]|).

    x: (B, ...) elementwise losses. No mask: the plain mean. No sample selected: exactly 0 with a
    zero gradient (the selected-out values are replaced, not multiplied, so inf/NaN there is inert).
    """
    if mask is None:
        return jnp.mean(x)
    mask = jnp.asarray(mask, x.dtype)
    m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    per_sample = x[0].size
    total = jnp.sum(jnp.where(m > 0, m * x, 0.0))
    return total / (nonzero_denominator(jnp.sum(mask)) * per_sample)


def select_view(outputs: Mapping[str, jax.Array], v: int) -> dict:
    """Slice `ImpHMR` outputs (B, V, ...) at view v -> dict of (B, ...)."""
    return {k: val[:, v] for k, val in outputs.items() if val.ndim >= 2}




def gt_rotmat(pose):
    """(B, 72) axis-angle -> (B, 24, 3, 3) (SPIN's batch_rodrigues)."""
    return axis_angle_to_matrix(pose.reshape(pose.shape[0], 24, 3))


def predicted_joints(body, rotmat, betas):
    """SPIN's 49 joints of an SMPL prediction: (B, 24, 3, 3), (B, 10) -> (B, 49, 3), metres."""
    out = smpl_jax.forward(body, rotmat, betas, extra_joints=("spin49",), return_vertices=False)
    return out.joints[:, joint_sets.SPIN49_SLICE]


def project_keypoints(joints49, cam):
    """(B, 49, 3) joints, (B, 3) weak-perspective [s, tx, ty] -> (B, 49, 2) in [-1, 1] crop coords."""
    return cam_lib.perspective_projection_normalized(
        joints49, cam_lib.weak_perspective_to_translation(cam))


# --------------------------------------------------------------------------- SPIN's terms
def keypoint_2d_loss(pred_kp, gt_kp, openpose_weight=0.0, gt_weight=1.0, mask=None):
    """SPIN's 2D term mean(conf·(x̂ − x)²) over B·49·2 elements.

    pred_kp: (B, 49, 2); gt_kp: (B, 49, 3) [x, y, conf]. OpenPose confidences (first 25) are scaled
    by openpose_weight (SPIN: 0) and GT ones by gt_weight (SPIN: 1). mask: optional (B,) samples.
    """
    conf = gt_kp[..., 2:]
    scale = jnp.concatenate([jnp.full((NUM_OPENPOSE, 1), openpose_weight, conf.dtype),
                             jnp.full((conf.shape[-2] - NUM_OPENPOSE, 1), gt_weight, conf.dtype)])
    conf = conf * scale
    # where, not product alone: a zero-confidence keypoint may hold anything, even inf.
    err = jnp.where(conf > 0, conf * jnp.square(pred_kp - gt_kp[..., :2]), 0.0)
    return _masked_mean(err, mask)


def aux_keypoint_loss(pred_kp, gt_kp):
    """The auxiliary 2D head's term: mean(conf·(x̂ − x)²) against the LAST K keypoints of gt_kp
    (K = 24: SPIN's 24 ground-truth joints; K = 49: all, OpenPose ones included).

    pred_kp: (B, K, 2); gt_kp: (B, 49, 3) [x, y, conf] in normalised crop coordinates.
    """
    k = pred_kp.shape[-2]
    if k > gt_kp.shape[-2]:
        raise ValueError(f"{k} auxiliary keypoints but the labels have {gt_kp.shape[-2]}")
    gt = gt_kp[..., -k:, :]
    conf = gt[..., 2:]
    err = jnp.where(conf > 0, conf * jnp.square(pred_kp - gt[..., :2]), 0.0)
    return jnp.mean(err)


def keypoint_3d_loss(pred_joints24, gt_joints, mask):
    """SPIN's 3D term: mean(conf·(Ĵ − J)²) over the selected samples' 24·3 elements.

    pred_joints24: (B, 24, 3); gt_joints: (B, 24, 4) [x, y, z, conf]; both are centred at SPIN's
    pelvis (j2 + j3)/2 here. mask: (B,) has_pose_3d.
    """
    conf = gt_joints[..., 3:]
    diff = (joint_sets.pelvis_centred(pred_joints24, LSP_HIPS)
            - joint_sets.pelvis_centred(gt_joints[..., :3], LSP_HIPS))
    err = jnp.where(conf > 0, conf * jnp.square(diff), 0.0)
    return _masked_mean(err, mask)


def smpl_losses(pred_rotmat, pred_betas, gt_rotmats, gt_betas, mask):
    """SPIN's SMPL terms: (MSE on rotation matrices, MSE on betas) over the selected samples.

    pred_rotmat, gt_rotmats: (B, 24, 3, 3) (gt from `gt_rotmat(pose)`); betas (B, 10);
    mask: (B,) has_smpl. Returns (loss_pose, loss_shape).
    """
    loss_pose = _masked_mean(jnp.square(pred_rotmat - gt_rotmats), mask)
    loss_shape = _masked_mean(jnp.square(pred_betas - gt_betas), mask)
    return loss_pose, loss_shape


def camera_prior(cam):
    """SPIN's camera-scale prior mean(exp(−10 s)²) over the batch; cam (B, 3) [s, tx, ty].

    Below s = 0 (a mirrored camera, never a valid one) it continues along its tangent 1 − 20 s
    instead of growing as exp(−20 s): the same value and gradient for s >= 0, while one batch
    whose predicted scale dips to s ≈ −1 no longer gives a loss of 1e10 and a gradient norm of
    1e13 (seen in the default job: clipping bounded the step, but Adam's moments kept the
    blow-up for hundreds of steps).
    """
    s = cam[..., 0]
    # exp only of s >= 0, so the branch jnp.where discards has a finite value and gradient.
    spin = jnp.square(jnp.exp(-10.0 * jnp.maximum(s, 0.0)))
    return jnp.mean(jnp.where(s >= 0.0, spin, 1.0 - 20.0 * s))


def silhouette_loss(logits, gt_silhouette, mask):
    """Geometric guidance term: BCE with logits vs a binary mask, mean over the selected samples'
    S·S pixels (BCE is the project's choice [INF], docs/method.md#geometric-guidance-d).
    logits, gt_silhouette: (B, S, S); mask (B,)."""
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                             gt_silhouette.astype(jnp.float32))
    return _masked_mean(bce, mask)


# --------------------------------------------------------------------------- ground truth at view φ
def imag_targets(batch, phi):
    """Ground truth seen from the view rendered at φ (the module docstring's sign convention).

    Args:
      batch: labels dict (pose, joints_3d).
      phi: (B,) radians.
    Returns:
      dict rotmat (B, 24, 3, 3) with R_go -> R_y(φ)·R_go and the body pose unchanged, and
      joints_3d (B, 24, 4) rotated by R_y(φ) about SPIN's pelvis (confidence kept). β never rotates.
      (The 3D term is pelvis-centred, so the rotation centre does not change its value.)
    """
    rotmat = views.rotate_pose(gt_rotmat(batch["pose"]), phi, is_matrix=True)
    j = batch["joints_3d"]
    xyz = j[..., :3]
    xyz = views.rotate_points(xyz, phi, joint_sets.pelvis_of(xyz, LSP_HIPS))
    return dict(rotmat=rotmat, joints_3d=jnp.concatenate([xyz, j[..., 3:]], axis=-1))


def gt_camera_translation(batch, body):
    """SPIN's GT camera: `estimate_translation` of the GT SMPL's 24 GT joints onto keypoints_2d.

    keypoints_2d are converted back to crop pixels 0.5·224·(x + 1) as SPIN does; the fit uses the
    24 GT joints (49-set indices 25:) weighted by their confidence. Meaningless (but finite) for
    samples without SMPL labels. Returns (B, 3) metres. No gradient (labels only).
    """
    joints49 = predicted_joints(body, gt_rotmat(batch["pose"]), batch["betas"])
    kp = batch["keypoints_2d"]
    pix = 0.5 * cam_lib.IMG_RES * (kp[..., :2] + 1.0)
    kp_pix = jnp.concatenate([pix, kp[..., 2:]], axis=-1)
    t = cam_lib.estimate_translation(joints49[:, NUM_OPENPOSE:], kp_pix[:, NUM_OPENPOSE:])
    return jax.lax.stop_gradient(t)


# GT silhouettes: coverage only (`rasterize.silhouette`), back faces culled (body meshes are
# closed, so the silhouette is that of the front faces), tiles of 4×4 pixels.
GT_SILHOUETTE_TILE = 4


def gt_silhouette_vertices(body, pose, betas, cam_t, phi):
    """The GT mesh seen from view φ in the crop camera's frame (B, V, 3): the GT SMPL (axis-angle
    pose (B, 72), betas) posed, rotated by R_y(φ) (B,) about its root joint
    (`views.rotate_points`) and translated by cam_t (B, 3). `gt_silhouettes` rasterizes these; the
    training set-up sizes the rasterizer's tile budget on them."""
    out = smpl_jax.forward(body, gt_rotmat(pose), betas)
    verts = views.rotate_points(out.vertices, phi, out.joints[:, 0])
    return verts + cam_t[:, None, :]


def silhouette_intrinsics(size):
    """SPIN's crop camera resized to size×size pixels (the GT silhouettes' camera)."""
    return cam_lib.rescale_intrinsics(cam_lib.spin_intrinsics(), cam_lib.IMG_RES, size)


def gt_silhouettes(body, pose, betas, cam_t, phi, size=128, *, max_tiles: int,
                   return_overflow: bool = False):
    """Ground-truth silhouettes Ŝ at view φ (Sec. 3.3 Fig. 5; docs/method.md#geometric-guidance-d),
    jit-able.

    The GT SMPL (axis-angle -> matrices) is posed, its vertices rotated by R_y(φ) about the root
    joint (`views.rotate_points`), translated by the GT camera translation and rasterized with
    SPIN's crop camera resized to size×size (f = 5000·size/224, principal point size/2).

    Args:
      body: BodyModel; pose (B, 72); betas (B, 10); cam_t (B, 3) from `gt_camera_translation`
        (the data pipeline computes it); phi (B,) radians.
      size: silhouette side (static; 128 in the paper = the decoder's 32·map_size).
      max_tiles: the rasterizer's static tile budget (`gt_silhouette_tiles` on representative
        data, outside jit, with headroom). The mask is computed by `rasterize.silhouette` with
        back faces culled, which is exact for closed meshes (SMPL, the default bodies).
      return_overflow: also return the rasterizer's (B,) count of faces dropped for lack of tile
        budget (should be 0; training logs it).
    Returns:
      (B, size, size) float32 in {0, 1}, no gradient [, (B,) int32 overflow].
    """
    verts = gt_silhouette_vertices(body, pose, betas, cam_t, phi)
    intr = silhouette_intrinsics(size)
    mask, overflow = silhouette(jax.lax.stop_gradient(verts), body.faces, intr, size, size,
                                max_tiles=max_tiles, tile=GT_SILHOUETTE_TILE,
                                cull_backfaces=True, return_overflow=True)
    return (mask, overflow) if return_overflow else mask


def gt_silhouette_tiles(body, pose, betas, cam_t, phi, size) -> int:
    """The tile budget `gt_silhouettes` needs for these CONCRETE labels (outside jit), exactly:
    same faces (back faces culled), tile size and camera. Add headroom for other batches."""
    verts = gt_silhouette_vertices(body, pose, betas, cam_t, phi)
    return required_tiles(verts, body.faces, silhouette_intrinsics(size), size, size,
                          tile=GT_SILHOUETTE_TILE, cull_backfaces=True)


# --------------------------------------------------------------------------- the paper's losses
def L_reg(pred_view0, batch, body, weights: LossWeights = LossWeights()):  # noqa: N802
    """Canonical view regression (eq. 5) on view 0 (φ = 0), plus SPIN's camera prior.

    λ2d·L2D + λ3d·L3D (has_pose_3d) + λpose·Lpose + λshape·Lβ (has_smpl) [+ λcam·Lcam].
    Returns (scalar, dict of the unweighted terms).
    """
    joints49 = predicted_joints(body, pred_view0["rotmat"], pred_view0["betas"])
    l2d = keypoint_2d_loss(project_keypoints(joints49, pred_view0["cam"]), batch["keypoints_2d"])
    l3d = keypoint_3d_loss(joints49[:, NUM_OPENPOSE:], batch["joints_3d"], batch["has_pose_3d"])
    lpose, lshape = smpl_losses(pred_view0["rotmat"], pred_view0["betas"], gt_rotmat(batch["pose"]),
                                batch["betas"], batch["has_smpl"])
    lcam = camera_prior(pred_view0["cam"])
    w = weights
    total = w.lambda_2d * l2d + w.lambda_3d * l3d + w.lambda_pose * lpose + w.lambda_shape * lshape
    if w.use_cam_prior:
        total = total + w.lambda_cam * lcam
    terms = dict(reg_2d=l2d, reg_3d=l3d, reg_pose=lpose, reg_shape=lshape, reg_cam=lcam)
    return total, terms


def L_imag(pred_view_phi, batch, phi, gt_silhouette, body,  # noqa: N802
           weights: LossWeights = LossWeights()):
    """Arbitrary view imagination (eq. 6) for the view rendered at φ (B,).

    λ3d·L3D(rotated joints; has_pose_3d) + λsilh·BCE(S_φ, Ŝ_φ; has_smpl)
    + λpose·Lpose(rotated global orientation; has_smpl) + λshape·Lβ(has_smpl).
    gt_silhouette: (B, S, S) from `gt_silhouettes` at the same φ, or None to skip the silhouette
    term (also skipped when the prediction has no silhouette_logits).
    Returns (scalar, dict of the unweighted terms).
    """
    target = imag_targets(batch, phi)
    joints49 = predicted_joints(body, pred_view_phi["rotmat"], pred_view_phi["betas"])
    l3d = keypoint_3d_loss(joints49[:, NUM_OPENPOSE:], target["joints_3d"], batch["has_pose_3d"])
    lpose, lshape = smpl_losses(pred_view_phi["rotmat"], pred_view_phi["betas"], target["rotmat"],
                                batch["betas"], batch["has_smpl"])
    w = weights
    total = w.lambda_3d * l3d + w.lambda_pose * lpose + w.lambda_shape * lshape
    terms = dict(imag_3d=l3d, imag_pose=lpose, imag_shape=lshape)
    if gt_silhouette is not None and "silhouette_logits" in pred_view_phi:
        lsilh = silhouette_loss(pred_view_phi["silhouette_logits"], gt_silhouette,
                                batch["has_smpl"])
        total = total + w.lambda_silh * lsilh
        terms["imag_silh"] = lsilh
    return total, terms


def L_cons(pred_phi1, pred_phi2, phi1, phi2, mask_2d_only,  # noqa: N802
           weights: LossWeights = LossWeights(), stop_gradient_target: bool = False):
    """Appearance consistency (eq. 7) between the views rendered at φ1 and φ2 (each (B,)).

    λpose·MSE(θ'_φ1, θ_φ2) on rotation matrices, θ'_φ1 = θ_φ1 with its global orientation carried
    to view φ2 (R_y(φ2 − φ1)·R_go), over all 24 joints as eq. 7's single ‖θ' − θ‖ (the same
    normalisation as Lpose, so λpose means the same in every term), + λshape·MSE(β_φ1, β_φ2),
    over the samples mask_2d_only (B,) selects.
    stop_gradient_target: treat the φ1 side as a fixed target (the paper does not say; default
    False, both views learn from each other).
    Returns (scalar, dict of the unweighted terms).
    """
    rot1, beta1 = pred_phi1["rotmat"], pred_phi1["betas"]
    if stop_gradient_target:
        rot1, beta1 = jax.lax.stop_gradient(rot1), jax.lax.stop_gradient(beta1)
    rot1 = views.rotate_pose(rot1, phi2 - phi1, is_matrix=True)
    lpose, lshape = smpl_losses(pred_phi2["rotmat"], pred_phi2["betas"], rot1, beta1, mask_2d_only)
    total = weights.lambda_pose * lpose + weights.lambda_shape * lshape
    return total, dict(cons_pose=lpose, cons_shape=lshape)


def total_loss(outputs, batch, phis, body, weights: LossWeights = LossWeights(), *,
               gt_silhouette=None, stop_gradient_target: bool = False):
    """L_all = L_reg + L_imag + L_cons for `ImpHMR` outputs with V = 2 or 3 views.

    Args:
      outputs: ImpHMR outputs (B, V, ...) (rotmat, betas, cam, optionally silhouette_logits, for
        all V views or (B, 1, S, S) for view 1 only, as `ImpHMR(..., silhouette_views=(1,))`).
      batch: labels (module docstring).
      phis: (B, V) radians the views were rendered at; phis[:, 0] must be 0 (the input view).
      body: BodyModel (a jit argument).
      gt_silhouette: (B, S, S) GT silhouettes at phis[:, 1] (`gt_silhouettes` with the camera of
        `gt_camera_translation`, as the train step renders them), or None to drop the silhouette
        term.
      stop_gradient_target: `L_cons`'s option (static under jit).
    Views: L_reg on view 0; L_imag on view 1; L_cons on views (1, 2) if V >= 3 else (0, 1).
    L_cons selects samples with neither has_smpl nor has_pose_3d.
    Returns:
      (scalar, dict with every unweighted term and the weighted L_reg, L_imag, L_cons, L_all).
    """
    num_views = outputs["rotmat"].shape[1]
    if num_views < 2:
        raise ValueError(f"total_loss needs at least 2 views (0 and φ), got {num_views}")
    phis = jnp.asarray(phis, jnp.float32)
    base = {k: v for k, v in outputs.items() if k != "silhouette_logits"}
    view1 = select_view(base, 1)
    if "silhouette_logits" in outputs:
        sil = outputs["silhouette_logits"]
        if sil.shape[1] == num_views:
            view1["silhouette_logits"] = sil[:, 1]
        elif sil.shape[1] == 1:  # decoded for the imagination view only (silhouette_views=(1,))
            view1["silhouette_logits"] = sil[:, 0]
        else:
            raise ValueError(f"silhouette_logits must hold all {num_views} views or view 1 only, "
                             f"got shape {sil.shape}")
    reg, terms = L_reg(select_view(base, 0), batch, body, weights)
    imag, t_imag = L_imag(view1, batch, phis[:, 1], gt_silhouette, body, weights)
    a, b = (1, 2) if num_views >= 3 else (0, 1)
    mask_2d_only = (1.0 - batch["has_smpl"]) * (1.0 - batch["has_pose_3d"])
    cons, t_cons = L_cons(select_view(base, a), select_view(base, b), phis[:, a], phis[:, b],
                          mask_2d_only, weights, stop_gradient_target)
    total = reg + imag + cons
    terms = dict(terms, **t_imag, **t_cons, L_reg=reg, L_imag=imag, L_cons=cons, L_all=total)
    return total, terms
