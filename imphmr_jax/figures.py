"""Figures for people: mesh overlays on crops, the multi-view "imagination" panel (paper Fig. 7) and
training curves. Headless (matplotlib's Agg backend, Pillow); everything writes PNG files.

Camera conventions (SPIN, `imphmr_jax.geometry.camera`): x right, y down, z forward, metres. A
predicted weak-perspective camera [s, tx, ty] is drawn with SPIN's renderer setting: focal length
5000 px, principal point at the image centre and translation [tx, ty, 2·5000/(res·s)], res = the
crop's side in pixels (the projection then equals s·(X_xy + t_xy) in [-1, 1] crop units for any
res).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

import smpl_jax
from imphmr_jax.data.schema import IMG_NORM_MEAN, IMG_NORM_STD
from imphmr_jax.geometry import camera as cam_lib
from imphmr_jax.render import rasterize as _raster
from imphmr_jax.render import shading

FOCAL_LENGTH = cam_lib.FOCAL_LENGTH
# Rasterizer tile budgets are rounded up to this, so that figures of similar meshes and sizes
# share one compiled rasterizer.
_TILE_MULTIPLE = 2048
IMAGINATION_PHIS_DEG = (0.0, 90.0, 180.0, 270.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def denormalize(images):
    """ImageNet-normalised RGB (..., H, W, 3) float -> uint8 in [0, 255] (inverse of the pipeline's
    `(x / 255 - mean) / std`)."""
    images = np.asarray(images, np.float32)
    if images.shape[-1] != 3:
        raise ValueError(f"denormalize: images must end in 3 RGB channels, got {images.shape}")
    rgb = images * IMG_NORM_STD + IMG_NORM_MEAN
    return (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _as_uint8(images):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return (np.clip(images.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)


def spin_camera(cams, height, width, focal_length=FOCAL_LENGTH):
    """(N, 3) [s, tx, ty] -> (translation (N, 3) metres, intrinsics (N, 4)) of SPIN's renderer for
    a height × width crop (square crops; res = height)."""
    cams = np.asarray(cams, np.float32)
    if height != width:
        raise ValueError(f"SPIN's weak-perspective camera needs square crops, got {height}x{width}")
    trans = np.asarray(cam_lib.weak_perspective_to_translation(cams, focal_length, img_res=height))
    intr = np.asarray(cam_lib.intrinsics(np.full(cams.shape[:1], focal_length, np.float32),
                                         height, width))
    return trans, intr


def mesh_overlays(images_uint8, vertices, faces, cams, *, alpha=0.8):
    """Predicted meshes drawn over their crops with SPIN's camera.

    Args:
      images_uint8: (N, H, W, 3) uint8 crops (`denormalize` the model input).
      vertices: (N, V, 3) predicted mesh, metres, no translation (body frame = camera axes).
      faces: (F, 3). cams: (N, 3) predicted [s, tx, ty].
    Returns:
      (N, H, W, 3) uint8.
    """
    images = _as_uint8(images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    vertices = np.asarray(vertices, np.float32)
    if vertices.ndim != 3 or vertices.shape[0] != images.shape[0]:
        raise ValueError(f"vertices must be (N, V, 3) with N = {images.shape[0]}, got "
                         f"{vertices.shape}")
    h, w = images.shape[1:3]
    trans, intr = spin_camera(cams, h, w)
    verts = vertices + trans[:, None]
    faces = np.asarray(faces)
    budget = _raster.required_tiles(verts, faces, intr, h, w, multiple=_TILE_MULTIPLE)
    frags = _raster.rasterize(verts, faces, intr, h, w, max_tiles=budget)
    img = images.astype(np.float32) / 255.0
    shaded = np.asarray(shading.shade(frags, verts, faces, background=img))
    mask = np.asarray(frags.mask)[..., None]
    out = np.where(mask, alpha * shaded + (1.0 - alpha) * img, img)
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def mesh_overlay_grid(images_uint8, vertices, faces, cams, path, ncols=4, *, alpha=0.8):
    """Write a grid of (crop | crop with the predicted mesh) pairs as one PNG.

    Args:
      images_uint8: (N, H, W, 3) uint8 crops. vertices: (N, V, 3) metres, no translation.
      faces: (F, 3). cams: (N, 3) [s, tx, ty] (SPIN's camera, f = 5000, res = H).
      path: output PNG. ncols: pairs per row.
    Returns:
      The grid (rows·H, min(N, ncols)·2W, 3) uint8 that was written.
    """
    images = _as_uint8(images_uint8)
    over = mesh_overlays(images, vertices, faces, cams, alpha=alpha)
    n, h, w = images.shape[:3]
    if n == 0:
        raise ValueError("mesh_overlay_grid: no images")
    cols = min(n, max(1, int(ncols)))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * 2 * w, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * 2 * w:c * 2 * w + w] = images[i]
        grid[r * h:(r + 1) * h, c * 2 * w + w:(c + 1) * 2 * w] = over[i]
    shading.write_png(path, grid)
    return grid


# --------------------------------------------------------------------------- imagination (Fig. 7)
def imagination_view_outputs(outputs: Mapping[str, Any], phis, body, index: int = 0) -> dict:
    """One sample's `ImpHMR` outputs at several views -> the `imagination_panel` input.

    Args:
      outputs: `ImpHMR.__call__` result with rotmat (B, K, 24, 3, 3), betas (B, K, 10) and
        silhouette_logits (B, K, S, S) (call with return_silhouette=True).
      phis: (B, K) or (K,) radians, the views the outputs were rendered at.
      body: the neutral body (predictions use it, without translation).
      index: which sample.
    Returns:
      dict(phis (K,), vertices (K, V, 3), silhouette_logits (K, S, S)) as numpy.
    """

    if "silhouette_logits" not in outputs:
        raise KeyError("outputs have no 'silhouette_logits'; run the model with "
                       "return_silhouette=True and a decoder (use_decoder=True)")
    phis = np.asarray(phis, np.float32)
    phis = phis[index] if phis.ndim == 2 else phis
    rot = np.asarray(outputs["rotmat"])[index]
    betas = np.asarray(outputs["betas"])[index]
    verts = np.asarray(smpl_jax.forward(body, rot, betas).vertices)
    return {"phis": phis, "vertices": verts,
            "silhouette_logits": np.asarray(outputs["silhouette_logits"], np.float32)[index]}


def _frame_meshes(vertices, res, fill=0.8):
    """Translations that centre each view's mesh and fit all of them at one common scale."""
    lo, hi = vertices.min(axis=1), vertices.max(axis=1)  # (K, 3)
    centre = 0.5 * (lo + hi)
    half = float(np.max(0.5 * (hi - lo)[:, :2]))
    half = max(half, 1e-3)
    tz = FOCAL_LENGTH * half / (0.5 * fill * res)
    trans = np.stack([-centre[:, 0], -centre[:, 1], tz - centre[:, 2]], -1)
    return trans.astype(np.float32)


def render_centred_meshes(vertices, faces, res, *, background=(1.0, 1.0, 1.0)):
    """(K, V, 3) meshes, each in its own view frame -> (K, res, res, 3) uint8 shaded renders, each
    centred and all at one common scale (f = 5000, image-centre principal point)."""
    vertices = np.asarray(vertices, np.float32)
    trans = _frame_meshes(vertices, res)
    intr = np.asarray(cam_lib.intrinsics(FOCAL_LENGTH, res, res))
    verts = vertices + trans[:, None]
    intr = np.broadcast_to(intr, (len(verts), 4))
    budget = _raster.required_tiles(verts, np.asarray(faces), intr, res, res,
                                    multiple=_TILE_MULTIPLE)
    img = shading.render_shaded(verts, np.asarray(faces), intr, res, res, max_tiles=budget,
                                background=background)
    return _as_uint8(np.asarray(img))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def imagination_panel(image_uint8, view_outputs: Mapping[str, Any], faces, path, *,
                      dpi: int = 100, panel_inches: float = 2.0):
    """The paper's Fig. 7: the input crop, then for each view φ (0°, 90°, 180°, 270° by default)
    the mesh predicted from that view rendered in that view, and the predicted silhouette
    sigmoid(silhouette_logits) side by side.

    Args:
      image_uint8: (H, W, 3) uint8 input crop (`denormalize` the model input).
      view_outputs: dict with vertices (K, V, 3) (the mesh predicted from view k, in view k's
        frame, no translation: the neutral body posed with that view's rotmat and betas),
        silhouette_logits (K, S, S), optional phis (K,) radians (default 0°, 90°, 180°, 270°
        when K = 4). `imagination_view_outputs` builds it from model outputs.
      faces: (F, 3). path: output PNG.
      dpi, panel_inches: each of the 1 + 2K panels is panel_inches wide; the PNG is
        ((1 + 2K)·panel_inches·dpi) × ((panel_inches + 0.4)·dpi) pixels.
    Returns:
      path.
    """
    image = _as_uint8(image_uint8)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"imagination_panel: image must be (H, W, 3), got {image.shape}")
    for key in ("vertices", "silhouette_logits"):
        if key not in view_outputs:
            raise KeyError(f"imagination_panel: view_outputs needs {key!r}; got "
                           f"{sorted(view_outputs)}")
    verts = np.asarray(view_outputs["vertices"], np.float32)
    sils = np.asarray(view_outputs["silhouette_logits"], np.float32)
    k = verts.shape[0]
    if verts.ndim != 3 or sils.ndim != 3 or sils.shape[0] != k:
        raise ValueError(f"imagination_panel: vertices (K, V, 3) and silhouette_logits (K, S, S) "
                         f"must agree on K; got {verts.shape} and {sils.shape}")
    if "phis" in view_outputs:
        phis_deg = np.rad2deg(np.asarray(view_outputs["phis"], np.float64)).reshape(-1)
    elif k == len(IMAGINATION_PHIS_DEG):
        phis_deg = np.asarray(IMAGINATION_PHIS_DEG)
    else:
        raise ValueError(f"imagination_panel: give view_outputs['phis'] for K = {k} views")
    res = image.shape[0]
    renders = render_centred_meshes(verts, faces, res)
    plt = _pyplot()
    ncols = 1 + 2 * k
    fig, axes = plt.subplots(1, ncols, figsize=(ncols * panel_inches, panel_inches + 0.4),
                             dpi=dpi, squeeze=False)
    panels = [(image, "input", None)]
    for i in range(k):
        deg = float(phis_deg[i]) % 360.0
        panels.append((renders[i], f"mesh φ={deg:.0f}°", None))
        panels.append((_sigmoid(sils[i]), f"silhouette φ={deg:.0f}°", "gray"))
    for ax, (img, title, cmap) in zip(axes[0], panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None,
                  interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.05)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- training curves
def read_metrics_jsonl(path) -> list[dict]:
    """JSON lines (one dict per line with 'step') -> list of dicts; errors name file and line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"metrics file {path} does not exist")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object with 'step'")
            rows.append(row)
    return rows


def _is_scalar(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def loss_curves(metrics_jsonl_path, path, *, keys: Optional[Sequence[str]] = None, ncols=3,
                dpi=100):
    """Plot every scalar field of a JSON-lines metrics file against 'step', one panel per field.

    Args:
      metrics_jsonl_path: file with one JSON object per line, each with 'step' and scalar fields
        (lines may carry different fields, e.g. train and eval rows).
      path: output PNG. keys: fields to plot (default all scalar fields, in first-seen order).
      ncols: panels per row. A field whose values are all > 0 and span more than two decades is
        drawn on a log scale.
    Returns:
      The list of plotted keys.
    """
    rows = read_metrics_jsonl(metrics_jsonl_path)
    if keys is None:
        keys = []
        for row in rows:
            for k, v in row.items():
                if k != "step" and _is_scalar(v) and k not in keys:
                    keys.append(k)
    keys = list(keys)
    if not keys:
        raise ValueError(f"{metrics_jsonl_path}: no scalar fields besides 'step' to plot")
    plt = _pyplot()
    cols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), dpi=dpi, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if _is_scalar(r.get(key))]
        pts = [(s, v) for s, v in pts if math.isfinite(v)]
        if pts:
            steps, vals = zip(*sorted(pts))
            ax.plot(steps, vals, lw=1.2)
            if min(vals) > 0 and max(vals) / min(vals) > 100:
                ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return keys
