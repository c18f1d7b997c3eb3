"""A preview figure of body models: rest pose and a few posed, reshaped bodies, front and side.

Flat-shaded orthographic rendering with matplotlib (painter's algorithm), good enough to check a
body file by eye; the project's real rasterizer lives in ``imphmr_jax.render``.
"""
from __future__ import annotations

import numpy as np

from smpl_jax.body_model import forward
from smpl_jax.io import load

# Hand-made poses (axis-angle, radians, SMPL joint indices). Signs in SMPL's frame (y up, facing
# +z): a negative x rotation at a hip swings the thigh forward; a positive one at a knee bends it.
_POSES = {
    "rest": {},
    "walk": {1: (-0.5, 0, 0), 2: (0.35, 0, 0), 4: (0.5, 0, 0), 5: (0.25, 0, 0),
             16: (0, 0, -1.2), 17: (0, 0, 1.2), 18: (0, -0.3, 0), 19: (0, 0.3, 0), 3: (0.1, 0, 0)},
    "reach": {16: (0, 0, 0.9), 17: (0, -0.6, -1.1), 19: (0, 1.2, 0), 1: (0, 0, 0.25),
              2: (0, 0, -0.1), 15: (-0.25, 0, 0)},
    "sit": {1: (-1.45, 0, 0.05), 2: (-1.45, 0, -0.05), 4: (1.5, 0, 0), 5: (1.5, 0, 0),
            16: (0, 0, -1.25), 17: (0, 0, 1.25), 18: (0, -0.8, 0), 19: (0, 0.8, 0)},
    "crouch": {0: (0.4, 0, 0), 1: (-2.0, 0, 0.2), 2: (-2.0, 0, -0.2), 4: (2.2, 0, 0), 5: (2.2, 0, 0),
               7: (-0.3, 0, 0), 8: (-0.3, 0, 0), 16: (0, 0.6, -0.8), 17: (0, -0.6, 0.8),
               3: (0.3, 0, 0), 6: (0.2, 0, 0)},
}


def preview_inputs(num_betas: int, seed: int = 0):
    """(names, pose (P, 24, 3), betas (P, num_betas)): rest at beta = 0, then posed random shapes."""
    rng = np.random.default_rng(seed)
    names, poses, betas = [], [], []
    for i, (name, joints) in enumerate(_POSES.items()):
        pose = np.zeros((24, 3), np.float32)
        for j, aa in joints.items():
            pose[j] = aa
        beta = np.zeros(num_betas, np.float32) if i == 0 else rng.normal(0, 1.0, num_betas).astype(np.float32)
        names.append(name if i == 0 else f"{name}  β₀={beta[0]:+.1f}")
        poses.append(pose)
        betas.append(beta)
    return names, np.stack(poses), np.stack(betas)


def draw_mesh(ax, vertices, faces, view="front", color=(0.75, 0.72, 0.68)):
    """Flat-shaded orthographic drawing of one mesh (V, 3) with faces (F, 3) on a matplotlib axis."""
    from matplotlib.collections import PolyCollection

    # SMPL's frame: y up, facing +z. The side view looks at the body's left side (from +x).
    if view == "front":
        uv, depth = vertices[:, [0, 1]], vertices[:, 2]
    else:
        uv, depth = np.stack([-vertices[:, 2], vertices[:, 1]], 1), vertices[:, 0]
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    eye = np.array([0.0, 0.0, 1.0]) if view == "front" else np.array([1.0, 0.0, 0.0])
    light = eye + np.array([0.3, 0.5, 0.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(np.abs(normals @ light), 0, 1)
    order = np.argsort(depth[faces].mean(1))  # far to near
    colors = np.clip(np.asarray(color)[None] * shade[order, None], 0, 1)
    ax.add_collection(PolyCollection(uv[faces[order]], facecolors=colors, edgecolors="none"))
    ax.set_xlim(uv[:, 0].min() - 0.05, uv[:, 0].max() + 0.05)
    ax.set_ylim(uv[:, 1].min() - 0.05, uv[:, 1].max() + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")


def write_preview(path: str, names=("default", "default-small"), seed: int = 0):
    """Write a PNG: for each body, rest and posed/reshaped samples, front row and side row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, pose, betas = preview_inputs(10, seed)
    fig, axes = plt.subplots(2 * len(names), len(labels), figsize=(2.4 * len(labels), 4.6 * len(names)),
                             squeeze=False)
    for b, name in enumerate(names):
        model = load(name)
        out = forward(model, pose, betas[:, : model.num_betas], extra_joints=())
        verts, joints = np.asarray(out.vertices), np.asarray(out.joints)
        faces = np.asarray(model.faces)
        for i, label in enumerate(labels):
            for r, view in enumerate(("front", "side")):
                ax = axes[2 * b + r, i]
                draw_mesh(ax, verts[i], faces, view)
                if view == "front":
                    ax.scatter(joints[i, :, 0], joints[i, :, 1], s=4, c="crimson", zorder=3)
                    ax.set_title(f"{name}\n{label}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
