"""Φ^MLP, NeuHMR's motion field (parameters η): phase t -> per-joint rotation residuals R' and a
translation residual T', composed with the HMR initialisation.

The network is NeMo's `MotionNet` (Wang et al., CVPR 2023,
`wangkua1/nemo-cvpr2023:nemo/neural_motion_model.py`):

    γ(t) = [t, sin(2^k π t), cos(2^k π t)]_{k < L}              (Fourier features: project choice)
    z    = ReLU(FCNN(γ(t))),  FCNN = Linear-ReLU-Linear-ReLU-Linear   (width h = 500)
    R'   = rot6d_to_matrix(rot_out(z))   (J, 3, 3),   rot_out: Linear(h, J·6), bias = identity 6D
    T'   = linear_out(z)                 (3,),        linear_out: Linear(h, 3), bias 0

and the refinement is R_t,j = R'_t,j · R⁰_t,j for every joint j (root included; the root is in
the camera frame) and transl_t = transl⁰_t + T'_t (`compose`).

Initialisation: both heads' kernels are exactly zero by default (`head_gain = 0`), so at step 0
R' = rot6d_to_matrix([1, 0, 0, 1, 0, 0]) = I exactly, T' = 0 exactly, and the refined motion
equals the HMR initialisation exactly. NeMo uses xavier-uniform with gain 1e-5 on rot_out, which
leaves R' near but not exactly I; `head_gain > 0` gives that init (for both heads). NeMo's code
comment reports NaN gradients with gain 0 and suspects its 6D conversion; here the zero kernel
gives exactly the identity 6D, where `rot6d_to_matrix`'s Gram–Schmidt is smooth, and the gradients
are finite (tested). With zero head kernels the trunk's gradient is zero at step 0 (it flows back
through those kernels), so the first step moves only the heads; later steps move all parameters.

6D layout: SPIN's (`smpl_jax.rotations`), where the identity is [1, 0, 0, 1, 0, 0].
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from imphmr_jax.cli import InputError
from imphmr_jax.render.volume import positional_encoding
from smpl_jax.rotations import axis_angle_to_matrix, rot6d_to_matrix

# The identity rotation in SPIN's 6D layout: the first two columns of I, read row by row.
IDENTITY_6D = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _identity_6d_init(key, shape, dtype=jnp.float32):
    """rot_out's bias: IDENTITY_6D repeated for every joint (shape (6·J,))."""
    del key
    return jnp.tile(jnp.asarray(IDENTITY_6D, dtype), shape[0] // 6)


def phase(frame_indices, num_frames: int) -> jax.Array:
    """NeMo's frame -> phase map, t = i / (T - 1) ∈ [0, 1] (linspace(0, 1, T)); T = 1 gives 0.

    Args:
      frame_indices: (...,) integer frame indices in [0, T).
      num_frames: T >= 1 (static).
    Returns:
      (...,) float32 phases t.
    Raises:
      InputError: T < 1.
    """
    if int(num_frames) < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    return jnp.asarray(frame_indices, jnp.float32) / max(int(num_frames) - 1, 1)


def fourier_features(t: jax.Array, octaves: int) -> jax.Array:
    """γ(t) = [t, sin(2^0 π t), cos(2^0 π t), ..., sin(2^(L-1) π t), cos(2^(L-1) π t)]: the
    project's positional encoding
    (`imphmr_jax.render.volume.positional_encoding`) of the phase, with the phase prepended.

    Args:
      t: (B,) phases.
      octaves: L >= 0.
    Returns:
      (B, 1 + 2L).
    """
    return positional_encoding(jnp.asarray(t, jnp.float32)[:, None], octaves,
                               include_input=True)


class MotionField(nn.Module):
    """Φ^MLP: phases t -> rotation residuals R' and translation residuals T' (module docstring).

    Attributes:
      hidden: FCNN width h (NeMo: 500).
      depth: Linear layers in the FCNN, ReLU between them and after the last (NeMo: 3).
      fourier_octaves: L of γ(t) (0: the raw phase only, as NeMo).
      num_joints: J (SMPL: 24, root included).
      head_gain: xavier-uniform gain of both heads' kernels; 0 (default) gives exactly zero
        kernels, so the refined motion starts exactly at the initialisation (NeMo: 1e-5).
    """

    hidden: int = 500
    depth: int = 3
    fourier_octaves: int = 6
    num_joints: int = 24
    head_gain: float = 0.0

    @nn.compact
    def __call__(self, t: jax.Array):
        """Args:
          t: (B,) phases in [0, 1] (`phase`).
        Returns:
          R': (B, J, 3, 3) rotation residuals (proper rotations).
          T': (B, 3) translation residuals, metres (camera frame).
        """
        if self.head_gain > 0:
            head_init = nn.initializers.variance_scaling(self.head_gain ** 2, "fan_avg", "uniform")
        else:
            head_init = nn.initializers.zeros_init()
        z = fourier_features(t, self.fourier_octaves)
        for i in range(self.depth):
            z = nn.relu(nn.Dense(self.hidden, name=f"fcnn_{i}")(z))
        rot6d = nn.Dense(6 * self.num_joints, kernel_init=head_init, bias_init=_identity_6d_init,
                         name="rot_out")(z)
        transl = nn.Dense(3, kernel_init=head_init, name="linear_out")(z)
        return rot6d_to_matrix(rot6d.reshape(-1, self.num_joints, 6)), transl


def compose(residual_R, residual_T, init_pose, init_transl):
    """Refined motion: R_t,j = R'_t,j · R⁰_t,j (all joints, root included), transl⁰ + T'.

    Args:
      residual_R: (B, J, 3, 3) R' from `MotionField`.
      residual_T: (B, 3) T', metres.
      init_pose: θ⁰ as (B, J, 3) axis-angle (radians) or (B, J, 3, 3) rotation matrices (told
        apart by rank relative to residual_R); the root is in the camera frame.
      init_transl: (B, 3) transl⁰, metres.
    Returns:
      rotmats: (B, J, 3, 3) refined rotations (e.g. `smpl_jax.forward`'s matrix pose input).
      transl: (B, 3) refined translation, metres.
    """
    init_pose = jnp.asarray(init_pose)
    if init_pose.ndim == residual_R.ndim - 1:
        init_pose = axis_angle_to_matrix(init_pose)
    return residual_R @ init_pose, jnp.asarray(init_transl) + residual_T


def residual_regulariser(residual_R, residual_T) -> jax.Array:
    """L_reg = mean over frames of Σ_j ‖R'_j − I‖²_F + ‖T'‖² (keeps the refinement near θ⁰).

    Args:
      residual_R: (B, J, 3, 3) R'.
      residual_T: (B, 3) T', metres.
    Returns:
      () scalar.
    """
    rot = jnp.sum((residual_R - jnp.eye(3, dtype=residual_R.dtype)) ** 2, axis=(-3, -2, -1))
    return jnp.mean(rot + jnp.sum(residual_T ** 2, axis=-1))
