"""Regressor R: SPIN's iterative error-feedback regressor (nkolot/SPIN models/hmr.py;
docs/method.md#regressor-r).

Each of `num_iterations` steps maps concat[features, pose (144), shape (10), cam (3)] through
fc1 -> Dropout -> fc2 -> Dropout (no ReLU, exactly as SPIN's code) and ADDS the outputs of the
decpose / decshape / deccam heads to the running estimate, starting from the mean parameters.
Poses are in SPIN's interleaved 6D layout; `rotmat` is their Gram-Schmidt rotation matrices.
"""
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from smpl_jax.rotations import rot6d_to_matrix

NUM_JOINTS = 24
NPOSE = NUM_JOINTS * 6
NUM_BETAS = 10
NUM_CAM = 3

# torch.nn.Linear's default weight init (kaiming_uniform with a = sqrt(5)) is U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# SPIN: nn.init.xavier_uniform_(dec*.weight, gain=0.01) on the three residual heads.
head_kernel_init = nn.initializers.variance_scaling(0.01**2, "fan_avg", "uniform")


def torch_linear_bias_init(fan_in: int):
    """torch.nn.Linear's default bias init U(+-1/sqrt(fan_in)); Flax's bias init cannot see fan_in."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def spin_default_mean_params() -> dict:
    """Mean parameters used when no `smpl_mean_params.npz` is given: numpy float32 arrays.

    pose (144,): joint 0 is a rotation of pi about x (an upright body in SPIN's y-down camera frame),
    every other joint identity, SPIN 6D layout; shape (10,) zeros; cam (3,) [0.9, 0, 0].
    """
    ident = np.eye(3, dtype=np.float32)
    rots = np.repeat(ident[None], NUM_JOINTS, axis=0)
    rots[0] = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # R_x(pi)
    pose = rots[:, :, :2].reshape(NPOSE)  # first two columns, row-major = SPIN's 6D layout
    return dict(pose=pose, shape=np.zeros(NUM_BETAS, np.float32),
                cam=np.array([0.9, 0.0, 0.0], np.float32))


def load_mean_params(path) -> dict:
    """SPIN's `smpl_mean_params.npz` -> dict(pose (144,), shape (10,), cam (3,)) float32 numpy."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"mean-params file not found: {path} (expected SPIN's "
                                "smpl_mean_params.npz with keys pose, shape, cam)")
    with np.load(path) as data:
        missing = [k for k in ("pose", "shape", "cam") if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(data.files)}; "
                             "expected pose (144,), shape (10,), cam (3,)")
        out = {k: np.asarray(data[k], np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    for k, n in (("pose", NPOSE), ("shape", NUM_BETAS), ("cam", NUM_CAM)):
        if out[k].shape != (n,):
            raise ValueError(f"{path}: key {k!r} has {out[k].size} values, expected {n}")
    return out


def _const(value, n, name):
    if value is None:
        value = spin_default_mean_params()[name]
    arr = np.asarray(value, np.float32).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"Regressor mean {name} must have {n} values, got shape {np.shape(value)}")
    return jnp.asarray(arr)


class Regressor(nn.Module):
    """SPIN iterative regressor. features (B, F) -> dict(pose_6d (B,144), rotmat (B,24,3,3),
    betas (B,10), cam (B,3)).

    mean_pose / mean_shape / mean_cam: starting estimate (constants, not params; tuples keep the
    module hashable); None takes `spin_default_mean_params()`. Per-call `init_*` (B, n) override them.
    The running estimate is kept in float32 whatever `dtype` the dense layers compute in.
    Dropout draws from the 'dropout' rng when train=True.
    """

    mean_pose: Any = None
    mean_shape: Any = None
    mean_cam: Any = None
    num_iterations: int = 3
    dropout: float = 0.5
    hidden: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool, init_pose=None, init_shape=None, init_cam=None):
        b = features.shape[0]
        fan_in = features.shape[-1] + NPOSE + NUM_BETAS + NUM_CAM

        def dense(n, fin, kernel_init, name):
            return nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=kernel_init,
                            bias_init=torch_linear_bias_init(fin), name=name)

        fc1 = dense(self.hidden, fan_in, torch_linear_kernel_init, "fc1")
        fc2 = dense(self.hidden, self.hidden, torch_linear_kernel_init, "fc2")
        decpose = dense(NPOSE, self.hidden, head_kernel_init, "decpose")
        decshape = dense(NUM_BETAS, self.hidden, head_kernel_init, "decshape")
        deccam = dense(NUM_CAM, self.hidden, head_kernel_init, "deccam")
        drop = nn.Dropout(self.dropout, deterministic=not train)

        def start(given, mean, n, name):
            if given is None:
                return jnp.broadcast_to(_const(mean, n, name), (b, n))
            return jnp.asarray(given, jnp.float32).reshape(b, n)

        pose = start(init_pose, self.mean_pose, NPOSE, "pose")
        shape = start(init_shape, self.mean_shape, NUM_BETAS, "shape")
        cam = start(init_cam, self.mean_cam, NUM_CAM, "cam")
        xf = jnp.asarray(features, self.dtype)
        for _ in range(self.num_iterations):
            xc = jnp.concatenate([xf, pose.astype(self.dtype), shape.astype(self.dtype),
                                  cam.astype(self.dtype)], axis=-1)
            xc = drop(fc2(drop(fc1(xc))))
            pose = pose + decpose(xc).astype(jnp.float32)
            shape = shape + decshape(xc).astype(jnp.float32)
            cam = cam + deccam(xc).astype(jnp.float32)
        rotmat = rot6d_to_matrix(pose.reshape(b, NUM_JOINTS, 6))
        return dict(pose_6d=pose, rotmat=rotmat, betas=shape, cam=cam)
