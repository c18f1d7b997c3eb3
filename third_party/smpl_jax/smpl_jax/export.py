"""Meshes and SMPL parameters to files other tools read: Wavefront OBJ and PLY writers, a small OBJ
reader for round trips, and the parameter layout of the `smplx` package.

Frames and units are the caller's: the writers store the numbers they are given (e.g. camera-frame
vertices ``forward(...).vertices + transl``, metres). Plain numpy, no mesh library.

    write_obj(path, vertices (V, 3), faces (F, 3))
    write_ply(path, vertices, faces, colors=None, *, binary=True)
    read_obj(path) -> (vertices (V, 3) float64, faces (F, 3) int64)
    smplx_params(pose, betas, transl=None, global_orient=None)
        -> {'global_orient' (B, 3), 'body_pose' (B, 69), 'betas' (B, NB), 'transl' (B, 3)}
    save_smplx_params(path.npz, pose, betas, transl=None, global_orient=None, extra=None)

smplx users load the parameters with, e.g.::

    p = numpy.load("params.npz")
    model = smplx.SMPL(model_path, batch_size=len(p["betas"]), num_betas=p["betas"].shape[1])
    out = model(**{k: torch.from_numpy(p[k]) for k in smpl_jax.export.SMPLX_KEYS})
    # out.vertices == smpl_jax.forward(body, pose, betas, transl).vertices (same model arrays)
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np

from smpl_jax import rotations

# The keyword arguments of smplx.SMPL.forward that the parameters fill, in this order.
SMPLX_KEYS = ("global_orient", "body_pose", "betas", "transl")
NUM_JOINTS = 24


def _check_mesh(vertices, faces, who: str):
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{who}: vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{who}: faces must be (F, 3) triangles, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        if f.size and not np.all(np.mod(f, 1) == 0):
            raise ValueError(f"{who}: faces must hold integer vertex ids, got dtype {f.dtype}")
        f = f.astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"{who}: face vertex ids must lie in [0, {len(v)}), got "
                         f"[{f.min()}, {f.max()}]")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{who}: vertices hold non-finite values")
    return v, f.astype(np.int64)


def _parent_dir(path):
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(parent, exist_ok=True)


# ------------------------------------------------------------------------------------------ OBJ
def write_obj(path, vertices, faces):
    """Write a triangle mesh as a Wavefront OBJ text file.

    Args:
      path: output file (folders are created).
      vertices: (V, 3) positions; written with 9 significant digits, so a float32 input reads
        back bit for bit (`read_obj(...)[0].astype(np.float32)`).
      faces: (F, 3) 0-based vertex ids (written 1-based, as OBJ counts).
    Returns:
      path.
    """
    v, f = _check_mesh(vertices, faces, "write_obj")
    _parent_dir(path)
    with open(path, "w") as fh:
        fh.write(f"# {len(v)} vertices, {len(f)} triangles (smpl_jax.export.write_obj)\n")
        if len(v):
            np.savetxt(fh, v.astype(np.float64), fmt="v %.9g %.9g %.9g")
        if len(f):
            np.savetxt(fh, f + 1, fmt="f %d %d %d")
    return path


def read_obj(path):
    """Read the vertices and faces of an OBJ file (e.g. one `write_obj` wrote).

    Reads 'v x y z [...]' lines (extra numbers, such as a w or per-vertex colours, are ignored)
    and 'f' lines with 'i', 'i/t', 'i//n' or 'i/t/n' entries, 1-based or negative (relative);
    polygons with more than three corners are split into a fan of triangles. Everything else
    (normals, texture coordinates, groups, materials, comments) is skipped.

    Returns:
      (vertices (V, 3) float64, faces (F, 3) int64 0-based).
    Raises:
      FileNotFoundError; ValueError naming the file and line of a malformed 'v' or 'f' line or
      a face id outside the vertices.
    """
    verts, faces = [], []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            tag = parts[0]
            try:
                if tag == "v":
                    if len(parts) < 4:
                        raise ValueError("a vertex needs three coordinates")
                    verts.append([float(x) for x in parts[1:4]])
                elif tag == "f":
                    if len(parts) < 4:
                        raise ValueError("a face needs at least three corners")
                    ids = []
                    for entry in parts[1:]:
                        i = int(entry.split("/")[0])
                        if i == 0:
                            raise ValueError("OBJ vertex ids start at 1")
                        ids.append(i - 1 if i > 0 else len(verts) + i)
                    for k in range(1, len(ids) - 1):
                        faces.append([ids[0], ids[k], ids[k + 1]])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: malformed {tag!r} line ({e}): "
                                 f"{line.strip()[:80]!r}") from None
    v = np.asarray(verts, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        bad = int(f.min()) if f.min() < 0 else int(f.max())
        raise ValueError(f"{path}: a face refers to vertex {bad + 1} (1-based) but the file has "
                         f"{len(v)} vertices")
    return v, f


# ------------------------------------------------------------------------------------------ PLY
def write_ply(path, vertices, faces, colors=None, *, binary: bool = True):
    """Write a triangle mesh as PLY (Stanford polygon file).

    Binary little-endian by default (compact and exact; what MeshLab, Blender, Open3D and trimesh
    read), ASCII with ``binary=False`` (9 significant digits: float32 values survive exactly).

    Layout: ``element vertex V`` with ``property float x, y, z`` (float32) and, with colours,
    ``property uchar red, green, blue``; ``element face F`` with ``property list uchar int
    vertex_indices`` (0-based).

    Args:
      path: output file (folders are created).
      vertices: (V, 3) positions (stored as float32).
      faces: (F, 3) 0-based vertex ids.
      colors: optional per-vertex RGB, (V, 3) uint8, or float in [0, 1] (scaled and rounded).
    Returns:
      path.
    """
    v, f = _check_mesh(vertices, faces, "write_ply")
    v = v.astype(np.float32)
    rgb = None
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != v.shape:
            raise ValueError(f"write_ply: colors must be (V, 3) = {v.shape}, got {c.shape}")
        if c.dtype != np.uint8:
            c = np.clip(np.round(np.asarray(c, np.float64) * 255.0), 0, 255).astype(np.uint8)
        rgb = c
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              "comment smpl_jax.export.write_ply", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    if rgb is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    _parent_dir(path)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
            if rgb is not None:
                vfields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
            vrec = np.empty(len(v), dtype=vfields)
            vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
            if rgb is not None:
                vrec["red"], vrec["green"], vrec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
            fh.write(vrec.tobytes())
            frec = np.empty(len(f), dtype=[("n", "u1"), ("ids", "<i4", (3,))])
            frec["n"] = 3
            frec["ids"] = f.astype(np.int32)
            fh.write(frec.tobytes())
        else:
            lines = []
            for i in range(len(v)):
                row = " ".join(f"{x:.9g}" for x in v[i].tolist())
                if rgb is not None:
                    row += " " + " ".join(str(int(x)) for x in rgb[i])
                lines.append(row)
            lines += [f"3 {a} {b} {c}" for a, b, c in f.tolist()]
            fh.write(("\n".join(lines) + ("\n" if lines else "")).encode("ascii"))
    return path


# ------------------------------------------------------------------------------- SMPL parameters
def _pose_axis_angle(pose, global_orient):
    """pose in any accepted layout -> (B, 24, 3) axis-angle float64 numpy."""
    p = np.asarray(pose, np.float64)
    nj = NUM_JOINTS
    if p.shape[-2:] == (3, 3) and p.ndim >= 3 and p.shape[-3] in (nj, nj - 1):
        p = p[None] if p.ndim == 3 else p  # (J, 3, 3) -> (1, J, 3, 3)
        if p.ndim != 4:
            raise ValueError(f"pose matrices must be (B, J, 3, 3) or (J, 3, 3), got {p.shape}")
        p = np.asarray(rotations.matrix_to_axis_angle(p), np.float64)
    elif p.ndim in (1, 2) and p.shape[-1] in (3 * nj, 3 * (nj - 1)):
        p = p.reshape((-1, p.shape[-1] // 3, 3))
    elif p.ndim in (2, 3) and p.shape[-2:] in ((nj, 3), (nj - 1, 3)):
        p = p[None] if p.ndim == 2 else p
    else:
        raise ValueError(
            f"pose must be axis-angle (B, 24, 3) / (B, 72) / (24, 3) or rotation matrices "
            f"(B, 24, 3, 3) / (24, 3, 3) (23 joints instead of 24 when global_orient is given), "
            f"got {p.shape}")
    if p.shape[1] == nj - 1:
        if global_orient is None:
            raise ValueError("pose holds 23 body joints: pass global_orient (B, 3) for the root")
        return p, True
    return p, False


def _rows(x, name, batch, width=None):
    a = np.asarray(x, np.float64)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or (width is not None and a.shape[1] != width) or a.shape[0] not in (1, batch):
        want = f"(B, {width})" if width else "(B, N)"
        raise ValueError(f"{name} must be {want} with B = {batch} (or 1), got {np.shape(x)}")
    return np.broadcast_to(a, (batch, a.shape[1]))


def smplx_params(pose, betas, transl=None, global_orient=None) -> dict:
    """SMPL parameters in the layout of `smplx.SMPL.forward`'s keyword arguments.

    Args:
      pose: axis-angle (B, 24, 3) or (B, 72) radians, or rotation matrices (B, 24, 3, 3); an
        unbatched (24, 3) / (72,) / (24, 3, 3) means B = 1. Joint 0 is the global orientation,
        joints 1..23 are relative to their parents (SMPL's order). With `global_orient` given,
        pose may hold the 23 body joints only ((B, 23, 3), (B, 69) or (B, 23, 3, 3)).
      betas: (B, NB) or (NB,) shape coefficients (NB is kept: smplx's num_betas must match).
      transl: optional (B, 3) or (3,) translation in metres, added to every vertex and joint
        (smpl_jax.forward's `transl`); None = zeros.
      global_orient: optional (B, 3) axis-angle or (B, 3, 3) / (3, 3) matrix replacing pose's
        joint 0.
    Returns:
      dict of float32 numpy arrays: global_orient (B, 3), body_pose (B, 69), betas (B, NB),
      transl (B, 3), axis-angle in radians; `smplx.SMPL(...)(**{k: torch.from_numpy(v)})` gives
      the same mesh as `smpl_jax.forward(body, pose, betas, transl)` for the same model arrays.
    """
    aa, body_only = _pose_axis_angle(pose, global_orient)
    batch = aa.shape[0]
    if global_orient is not None:
        g = np.asarray(global_orient, np.float64)
        if g.shape[-2:] == (3, 3):
            g = np.asarray(rotations.matrix_to_axis_angle(g.reshape(-1, 3, 3)), np.float64)
        root = _rows(g, "global_orient", batch, 3)
    else:
        root = aa[:, 0]
    body = aa if body_only else aa[:, 1:]
    b = np.asarray(betas, np.float64)
    b = _rows(b, "betas", batch)
    t = np.zeros((batch, 3)) if transl is None else _rows(transl, "transl", batch, 3)
    out = {"global_orient": root, "body_pose": body.reshape(batch, -1), "betas": b,
           "transl": t}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"smplx_params: {k} holds non-finite values")
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def save_smplx_params(path, pose, betas, transl=None, global_orient=None,
                      extra: Optional[Mapping[str, np.ndarray]] = None):
    """Write `smplx_params(pose, betas, transl, global_orient)` to an .npz file.

    Args:
      path: output .npz (folders are created; numpy appends '.npz' when missing).
      extra: more arrays to store beside the parameters (e.g. the camera: 'cam_crop', 'focal_length',
        'intrinsics'); their names must differ from SMPLX_KEYS.
    Returns:
      The parameter dict that was written (without `extra`).
    """
    params = smplx_params(pose, betas, transl, global_orient)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(params))
    if clash:
        raise ValueError(f"save_smplx_params: extra arrays may not be named {clash}")
    _parent_dir(path)
    np.savez(path, **params, **{k: np.asarray(v) for k, v in extra.items()})
    return params
