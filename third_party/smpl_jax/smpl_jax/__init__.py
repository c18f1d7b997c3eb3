"""smpl_jax: SMPL linear blend skinning in JAX, model-file loaders, and an openly licensed default body.

Public names::

    smpl_jax.load(path_or_name, num_betas=10) -> BodyModel
    smpl_jax.forward(model, pose, betas, transl=None) -> BodyOutput(vertices, joints)
    smpl_jax.rotations.{axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_matrix, matrix_to_rot6d, ...}
    smpl_jax.export.{write_obj, write_ply, read_obj, smplx_params, save_smplx_params}
        (also importable from smpl_jax directly)
    python -m smpl_jax.build_default --out DIR
"""
from smpl_jax import export, joint_sets, rotations
from smpl_jax.body_model import BodyModel, BodyOutput, forward
from smpl_jax.export import read_obj, save_smplx_params, smplx_params, write_obj, write_ply
from smpl_jax.io import load

__all__ = ["BodyModel", "BodyOutput", "export", "forward", "joint_sets", "load", "read_obj",
           "rotations", "save_smplx_params", "smplx_params", "write_obj", "write_ply"]
