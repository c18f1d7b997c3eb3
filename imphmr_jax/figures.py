"""Figures for people: mesh overlays on crops, the multi-view "imagination" panel (paper Fig. 7) and
training curves. Headless (matplotlib's Agg backend, Pillow); everything writes PNG files.

Camera conventions (SPIN, `imphmr_jax.geometry.camera`): x right, y down, z forward, metres. A
predicted weak-perspective camera [s, tx, ty] is drawn with SPIN's renderer setting: focal length
5000 px, principal point at the image centre and translation [tx, ty, 2·5000/(res·s)], res = the
crop's side in pixels (the projection then equals s·(X_xy + t_xy) in [-1, 1] crop units for any
res). Sheets of several images (`labelled_sheet`, `mesh_overlay_grid`) are drawn at a readable
size: small crops upsampled to >= 192 px with their meshes rendered at that size, gaps, a label
per tile. `full_image_overlay` draws meshes over a whole photo with its full-perspective camera.

Why one module: every picture the project writes for a person to look at, sharing one camera
setting, one sheet layout and the headless plotting set-up; each function is short.
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


# Overlay sheets are drawn at a readable size: crops smaller than this are upsampled (and their
# meshes rendered at the upsampled size), with gaps between the tiles and a label above each pair.
MIN_TILE = 192
SHEET_GAP = 8


def readable_tile(height: int, min_tile: int = MIN_TILE) -> int:
    """The drawn side of an `height`-pixel crop: the smallest integer multiple of it that is at
    least `min_tile` (64 -> 192, 224 -> 224), so that upsampled pixels stay square blocks of
    equal size."""
    height = int(height)
    if height <= 0:
        raise ValueError(f"readable_tile: height must be > 0, got {height}")
    return height * max(1, math.ceil(int(min_tile) / height))


def resize_image(image_uint8, height: int, width: int):
    """(H, W, 3) uint8 -> (height, width, 3) uint8, bilinear (antialiased when shrinking)."""
    from PIL import Image

    img = _as_uint8(image_uint8)
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(Image.fromarray(img).resize((int(width), int(height)),
                                                  Image.Resampling.BILINEAR))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=int(size))
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def label_size(tile: int) -> int:
    """Font size of the labels above a tile of `tile` pixels (12 px at least)."""
    return max(12, int(tile) // 12)


def draw_label(image_uint8, text: str, xy=(4, 2), *, size: int = 14, color=(20, 20, 20),
               background=None):
    """`text` drawn into a copy of an (H, W, 3) uint8 image at pixel `xy` (top-left); with
    `background` an RGB box is filled behind it. Returns the new image."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_as_uint8(image_uint8).copy())
    draw = ImageDraw.Draw(img)
    font = _font(size)
    if background is not None:
        box = draw.textbbox(xy, text, font=font)
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=tuple(background))
    draw.text(xy, text, fill=tuple(color), font=font)
    return np.asarray(img)


def overlay_labels(indices: Sequence[int], values: Optional[Sequence[float]] = None, *,
                   name: str = "PA-MPJPE", unit: str = "mm") -> list[str]:
    """Tile labels for `mesh_overlay_grid`: '#12' per sample index, or '#12  PA-MPJPE 85.3 mm'
    with a metric value per sample (None or non-finite -> 'n/a')."""
    out = []
    for k, idx in enumerate(indices):
        text = f"#{int(idx)}"
        if values is not None:
            v = values[k]
            shown = f"{float(v):.1f} {unit}" if v is not None and math.isfinite(float(v)) \
                else "n/a"
            text += f"  {name} {shown}"
        out.append(text)
    return out


def labelled_sheet(tiles: Sequence[np.ndarray], labels: Optional[Sequence[str]], path=None, *,
                   ncols: int = 4, gap: int = SHEET_GAP, font_size: Optional[int] = None):
    """A contact sheet: tiles in a grid of `ncols` columns with `gap` pixels around and between
    them and, with labels, a label strip above each tile. Tiles may differ in size (each cell is
    as large as the largest tile; smaller ones are centred on white).

    Args:
      tiles: sequence of (H_i, W_i, 3) uint8 images. labels: one string per tile, or None.
      path: PNG to write (optional). font_size: default `label_size` of the tallest tile.
    Returns:
      The sheet, (H, W, 3) uint8.
    """
    tiles = [_as_uint8(t) for t in tiles]
    if not tiles:
        raise ValueError("labelled_sheet: no tiles")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"labelled_sheet: {len(labels)} labels for {len(tiles)} tiles")
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    size = int(font_size or label_size(th))
    strip = (size + 8) if labels is not None else 0
    cols = min(len(tiles), max(1, int(ncols)))
    rows = math.ceil(len(tiles) / cols)
    gap = max(0, int(gap))
    cell_h, cell_w = strip + th, tw
    sheet = np.full((gap + rows * (cell_h + gap), gap + cols * (cell_w + gap), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y0, x0 = gap + r * (cell_h + gap), gap + c * (cell_w + gap)
        h, w = tile.shape[:2]
        ty, tx = y0 + strip + (th - h) // 2, x0 + (tw - w) // 2
        sheet[ty:ty + h, tx:tx + w] = tile
    if labels is not None:
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            y0, x0 = gap + r * (cell_h + gap), gap + c * (cell_w + gap)
            sheet = draw_label(sheet, str(text), (x0 + 2, y0 + 3), size=size)
    if path is not None:
        shading.write_png(path, sheet)
    return sheet


def mesh_overlay_grid(images_uint8, vertices, faces, cams, path, ncols=4, *, alpha=0.8,
                      labels=None, tile: Optional[int] = None, gap: int = SHEET_GAP):
    """Write a sheet of (crop | crop with the predicted mesh) pairs as one PNG, at a readable size.

    Each crop is upsampled (bilinear) to `tile` pixels and its mesh rendered at that size (not an
    upsampled 64-px render), pairs are separated by `gap` pixels and carry a label above them.

    Args:
      images_uint8: (N, H, W, 3) uint8 crops. vertices: (N, V, 3) metres, no translation.
      faces: (F, 3). cams: (N, 3) [s, tx, ty] (SPIN's camera, f = 5000; the projection in crop
        units does not depend on the drawn size).
      path: output PNG. ncols: pairs per row.
      labels: one string per pair (e.g. `overlay_labels(indices, pa_mpjpe)`); None = '#0',
        '#1', ... (the position in `images_uint8`); False = no labels.
      tile: drawn side of each crop in pixels; None = `readable_tile(H)` (>= 192 px).
      gap: pixels around and between pairs (the crop and its overlay are gap // 4 apart).
        `tile=H, gap=0, labels=False` gives the plain (rows·H, cols·2W) grid.
    Returns:
      The sheet (H_sheet, W_sheet, 3) uint8 that was written.
    """
    images = _as_uint8(images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"mesh_overlay_grid: images must be (N, H, W, 3), got {images.shape}")
    n, h, w = images.shape[:3]
    if n == 0:
        raise ValueError("mesh_overlay_grid: no images")
    if h != w:
        raise ValueError(f"mesh_overlay_grid: crops must be square, got {h}x{w}")
    side = readable_tile(h) if tile is None else int(tile)
    if side <= 0:
        raise ValueError(f"mesh_overlay_grid: tile must be > 0, got {tile}")
    if side != h:
        images = np.stack([resize_image(im, side, side) for im in images])
    over = mesh_overlays(images, vertices, faces, cams, alpha=alpha)
    if labels is False:
        texts = None
    elif labels is None:
        texts = [f"#{i}" for i in range(n)]
    else:
        texts = [str(t) for t in labels]
        if len(texts) != n:
            raise ValueError(f"mesh_overlay_grid: {len(texts)} labels for {n} images")
    inner = max(0, int(gap)) // 4
    pairs = []
    for i in range(n):
        pair = np.full((side, 2 * side + inner, 3), 255, np.uint8)
        pair[:, :side] = images[i]
        pair[:, side + inner:] = over[i]
        pairs.append(pair)
    return labelled_sheet(pairs, texts, path, ncols=ncols, gap=gap, font_size=label_size(side))


def full_image_overlay(image_uint8, vertices_cam, faces, intrinsics, *, boxes=None,
                       alpha: float = 0.8, min_side: int = 512, max_side: int = 1024,
                       box_color=(255, 200, 0)):
    """Meshes drawn over a whole photo with its full-perspective camera, at a readable size.

    The photo is resized so that its longer side lies in [min_side, max_side] (unchanged when it
    already does), the intrinsics scaled with it (`camera.rescale_intrinsics`), and the meshes are
    rasterized one by one and composited by depth (people occlude each other correctly).

    Args:
      image_uint8: (H, W, 3) uint8 photo.
      vertices_cam: (P, V, 3) or (V, 3) camera-frame vertices (x right, y down, z forward,
        metres), e.g. `inference.Prediction.vertices_cam`.
      faces: (F, 3).
      intrinsics: (4,) [fx, fy, cx, cy] in pixels of the (H, W) photo.
      boxes: optional (P, 4) [x0, y0, x1, y1] pixel boxes of the photo, outlined.
    Returns:
      (H', W', 3) uint8, the drawn size.
    """
    from PIL import Image, ImageDraw

    image = _as_uint8(image_uint8)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"full_image_overlay: image must be (H, W, 3), got {image.shape}")
    verts = np.asarray(vertices_cam, np.float32)
    verts = verts[None] if verts.ndim == 2 else verts
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"full_image_overlay: vertices must be (P, V, 3), got {verts.shape}")
    faces = np.asarray(faces)
    h, w = image.shape[:2]
    long_side = max(h, w)
    target = min(max(long_side, int(min_side)), int(max_side))
    factor = target / long_side
    out_h, out_w = max(1, round(h * factor)), max(1, round(w * factor))
    shown = resize_image(image, out_h, out_w)
    intr = np.asarray(cam_lib.rescale_intrinsics(np.asarray(intrinsics, np.float32), (h, w),
                                                  (out_h, out_w)), np.float32)
    # One person at a time with one compiled rasterizer (the same shapes and a power-of-two tile
    # budget for any number of people), composited by depth: the nearest surface wins.
    need = max(_raster.required_tiles(v[None], faces, intr[None], out_h, out_w,
                                      multiple=_TILE_MULTIPLE) for v in verts)
    budget = _TILE_MULTIPLE * 2 ** math.ceil(math.log2(need / _TILE_MULTIPLE))
    img = shown.astype(np.float32)[None] / 255.0
    depth = np.full((1, out_h, out_w), np.inf, np.float32)
    color, covered = img, np.zeros((1, out_h, out_w), bool)
    for v in verts:
        frags = _raster.rasterize(v[None], faces, intr[None], out_h, out_w, max_tiles=budget)
        shaded = np.asarray(shading.shade(frags, v[None], faces, background=img))
        nearer = np.asarray(frags.mask) & (np.asarray(frags.depth) < depth)
        depth = np.where(nearer, np.asarray(frags.depth), depth)
        color = np.where(nearer[..., None], shaded, color)
        covered |= nearer
    mask = covered[..., None]
    out = np.where(mask, alpha * color + (1.0 - alpha) * img, img)[0]
    out = (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)
    if boxes is not None:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        width = max(1, target // 300)
        for box in np.asarray(boxes, np.float64).reshape(-1, 4):
            x0, y0, x1, y1 = (box * np.array([out_w / w, out_h / h] * 2)).tolist()
            draw.rectangle((x0, y0, x1, y1), outline=tuple(box_color), width=width)
        out = np.asarray(pil)
    return out


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
      path: output PNG. keys: fields to plot (default all scalar fields, in first-seen order,
        except those that are 0 wherever finite or never finite: an empty panel says nothing,
        so they are named in a caption under the panels instead; if every field is such, all
        are drawn).
      ncols: panels per row. A field whose values are all > 0 and span more than two decades is
        drawn on a log scale.
    Returns:
      The list of plotted keys.
    """
    rows = read_metrics_jsonl(metrics_jsonl_path)
    skipped = {"always 0": [], "no finite value": []}
    if keys is None:
        keys = []
        for row in rows:
            for k, v in row.items():
                if k != "step" and _is_scalar(v) and k not in keys:
                    keys.append(k)
        informative = []
        for k in keys:
            vals = [float(r[k]) for r in rows if _is_scalar(r.get(k))]
            finite = [v for v in vals if math.isfinite(v)]
            if not finite:
                skipped["no finite value"].append(k)
            elif all(v == 0.0 for v in finite):
                skipped["always 0"].append(k)
            else:
                informative.append(k)
        if informative:
            keys = informative
        else:
            skipped = {}
    keys = list(keys)
    if not keys:
        raise ValueError(f"{metrics_jsonl_path}: no scalar fields besides 'step' to plot")
    caption = "; ".join(f"not plotted ({why}): {', '.join(ks)}"
                        for why, ks in skipped.items() if ks)
    plt = _pyplot()
    cols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / cols)
    extra = 0.35 if caption else 0.0  # inches for the caption line
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows + extra), dpi=dpi,
                             squeeze=False)
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
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, extra / (3 * nrows + extra), 1, 1))
    else:
        fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return keys
