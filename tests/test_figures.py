"""Figures: overlays, the imagination panel (paper Fig. 7), loss curves; PNGs in tests/_output/."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import smpl_jax
from imphmr_jax import figures
from imphmr_jax.data.schema import IMG_NORM_MEAN, IMG_NORM_STD
from imphmr_jax.geometry.views import rotate_points
from imphmr_jax.models.regressor import spin_default_mean_params
from smpl_jax.rotations import rot6d_to_matrix

OUT = os.path.join(os.path.dirname(__file__), "_output", "figures")
RES = 64
_forward = jax.jit(smpl_jax.forward, static_argnames=("extra_joints", "return_vertices"))


@pytest.fixture(scope="module")
def body():
    return smpl_jax.load("default-small")


@pytest.fixture(scope="module")
def mean_mesh(body):
    """The default body in SPIN's mean pose (upright in the y-down camera frame): (V, 3)."""
    rot = rot6d_to_matrix(jnp.asarray(spin_default_mean_params()["pose"]).reshape(24, 6))
    return np.asarray(_forward(body, rot[None], jnp.zeros((1, 10))).vertices[0])


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_denormalize_inverts_pipeline_normalisation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(2, 5, 6, 3)).astype(np.uint8)
    normalised = (img / 255.0 - IMG_NORM_MEAN) / IMG_NORM_STD
    np.testing.assert_array_equal(figures.denormalize(normalised), img)
    with pytest.raises(ValueError, match="RGB"):
        figures.denormalize(np.zeros((4, 4)))


def test_mesh_overlay_grid(body, mean_mesh):
    n = 4
    rng = np.random.default_rng(1)
    images = rng.integers(40, 90, size=(n, RES, RES, 3)).astype(np.uint8)  # dark noise
    cams = np.array([[0.9, 0.0, 0.0], [0.7, 0.1, -0.1], [1.1, -0.1, 0.05], [0.5, 0.0, 0.2]],
                    np.float32)
    verts = np.repeat(mean_mesh[None], n, 0)
    path = os.path.join(OUT, "overlay_grid.png")
    grid = figures.mesh_overlay_grid(images, verts, np.asarray(body.faces), cams, path, ncols=2,
                                     tile=RES, gap=0, labels=False)  # the plain grid
    png = _read(path)
    np.testing.assert_array_equal(png, grid)
    assert png.shape == (2 * RES, 2 * 2 * RES, 3)  # 2 rows of 2 (crop | overlay) pairs
    for i in range(n):
        r, c = divmod(i, 2)
        cell = png[r * RES:(r + 1) * RES, c * 2 * RES:(c + 1) * 2 * RES]
        crop, over = cell[:, :RES], cell[:, RES:]
        np.testing.assert_array_equal(crop, images[i])
        # Independent projection of the vertices: SPIN's pinhole, f = 5000, t from [s, tx, ty].
        s, tx, ty = cams[i]
        tz = 2 * 5000.0 / (RES * s)
        x = mean_mesh + np.array([tx, ty, tz])
        u = 5000.0 * x[:, 0] / x[:, 2] + RES / 2
        v = 5000.0 * x[:, 1] / x[:, 2] + RES / 2
        inside = (u >= 0) & (u < RES) & (v >= 0) & (v < RES)
        cols, rows = u[inside].astype(int), v[inside].astype(int)
        changed = np.any(over != crop, axis=-1)
        hit = np.zeros((RES, RES), bool)
        hit[rows, cols] = True
        pad = np.pad(hit, 1)
        # Interior of the projection (the pixel and its 8 neighbours hold projected vertices):
        # the mesh is drawn there. Contour pixels may legitimately miss (the surface only grazes
        # them), so they are not asked for.
        interior = np.ones_like(hit)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                interior &= pad[1 + dr:RES + 1 + dr, 1 + dc:RES + 1 + dc]
        assert interior.sum() >= 20 and changed[interior].all(), i
        # Nothing is drawn farther than one pixel from a projected vertex.
        near = np.zeros_like(pad)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                near |= np.roll(np.roll(pad, dr, 0), dc, 1)
        assert not (changed & ~near[1:-1, 1:-1]).any(), i
        assert over[changed].mean() > crop[changed].mean() + 40  # the light-blue body is drawn
    with pytest.raises(ValueError, match="square"):
        figures.spin_camera(cams, 32, 40)


def test_mesh_overlay_grid_is_readable(body, mean_mesh):
    """The default sheet: 64-px crops drawn at 192 px (the mesh rendered at that size, not
    upsampled), 8-px gaps, a label strip above each pair."""
    n, rng = 3, np.random.default_rng(4)
    images = rng.integers(40, 90, size=(n, RES, RES, 3)).astype(np.uint8)
    cams = np.array([[0.9, 0.0, 0.0], [0.7, 0.1, -0.1], [1.1, -0.1, 0.05]], np.float32)
    verts = np.repeat(mean_mesh[None], n, 0)
    labels = figures.overlay_labels([5, 17, 40], [81.25, float("nan"), 102.0])
    assert labels == ["#5  PA-MPJPE 81.2 mm", "#17  PA-MPJPE n/a", "#40  PA-MPJPE 102.0 mm"]
    path = os.path.join(OUT, "overlay_grid_readable.png")
    sheet = figures.mesh_overlay_grid(images, verts, np.asarray(body.faces), cams, path, ncols=2,
                                      labels=labels)
    np.testing.assert_array_equal(_read(path), sheet)
    tile, gap = figures.readable_tile(RES), figures.SHEET_GAP
    assert tile == 192 and figures.readable_tile(224) == 224
    strip = figures.label_size(tile) + 8
    pair_w = 2 * tile + gap // 4
    assert sheet.shape == (gap + 2 * (strip + tile + gap), gap + 2 * (pair_w + gap), 3)
    for i in range(n):
        r, c = divmod(i, 2)
        y0, x0 = gap + r * (strip + tile + gap), gap + c * (pair_w + gap)
        label = sheet[y0:y0 + strip, x0:x0 + pair_w]
        assert (label < 128).any(), i  # dark text on the white strip
        crop = sheet[y0 + strip:y0 + strip + tile, x0:x0 + tile]
        over = sheet[y0 + strip:y0 + strip + tile, x0 + tile + gap // 4:x0 + pair_w]
        np.testing.assert_array_equal(crop, figures.resize_image(images[i], tile, tile))
        changed = np.any(over != crop, axis=-1)
        # Rendered at 192 px: the body's outline is not a staircase of 3x3 blocks.
        blocks = changed.reshape(64, 3, 64, 3).transpose(0, 2, 1, 3).reshape(64, 64, 9)
        assert changed.mean() > 0.05 and (blocks.any(-1) & ~blocks.all(-1)).sum() > 20, i
        if c == 0:  # the gap to the right of the first pair is white
            np.testing.assert_array_equal(sheet[y0:y0 + strip + tile, x0 + pair_w:x0 + pair_w + gap],
                                          255)


def test_imagination_panel(body, mean_mesh):
    phis = np.deg2rad(figures.IMAGINATION_PHIS_DEG).astype(np.float32)
    root = mean_mesh.mean(0)
    verts = np.asarray(rotate_points(jnp.asarray(mean_mesh)[None].repeat(4, 0), phis,
                                     jnp.asarray(root)[None].repeat(4, 0)))
    # A silhouette per view: a vertical bar whose width shrinks with |cos φ| (front vs side).
    yy, xx = np.mgrid[:16, :16]
    sils = np.stack([np.where(np.abs(xx - 7.5) < 2 + 5 * abs(np.cos(p)), 8.0, -8.0)
                     for p in phis]).astype(np.float32)
    image = figures.denormalize(np.random.default_rng(2).normal(size=(RES, RES, 3)))
    path = os.path.join(OUT, "imagination_panel.png")
    figures.imagination_panel(image, {"phis": phis, "vertices": verts, "silhouette_logits": sils},
                              np.asarray(body.faces), path, dpi=50, panel_inches=1.0)
    png = _read(path)
    assert png.shape == (int(1.4 * 50), 9 * 50, 3)  # 1 + 2·4 panels of 1 inch at 50 dpi
    assert png.std() > 20  # not blank
    # The renders: each view shows the mesh centred; the T-posed body is wider from the front
    # (0°, 180°) than from the side (90°, 270°) at the common scale.
    renders = figures.render_centred_meshes(verts, np.asarray(body.faces), RES)
    mesh = np.any(renders < 250, axis=-1)  # white background
    widths = [np.ptp(np.nonzero(m.any(0))[0]) for m in mesh]
    assert all(m.any() for m in mesh)
    assert widths[0] > 2 * widths[1] and widths[2] > 2 * widths[3]
    for m in mesh:
        cy, cx = np.mean(np.nonzero(m), axis=1)
        assert abs(cx - RES / 2) < RES / 8 and abs(cy - RES / 2) < RES / 6
    with pytest.raises(KeyError, match="silhouette_logits"):
        figures.imagination_panel(image, {"vertices": verts}, np.asarray(body.faces), path)


def test_imagination_view_outputs(body):
    rng = np.random.default_rng(3)
    rot = np.tile(np.eye(3, dtype=np.float32), (2, 4, 24, 1, 1))
    outputs = {"rotmat": rot, "betas": rng.normal(size=(2, 4, 10)).astype(np.float32),
               "silhouette_logits": rng.normal(size=(2, 4, 8, 8)).astype(np.float32)}
    phis = np.tile(np.deg2rad([0.0, 90.0, 180.0, 270.0]), (2, 1))
    vo = figures.imagination_view_outputs(outputs, phis, body, index=1)
    assert vo["vertices"].shape == (4, body.num_vertices, 3)
    np.testing.assert_allclose(vo["phis"], phis[1])
    np.testing.assert_array_equal(vo["silhouette_logits"], outputs["silhouette_logits"][1])
    with pytest.raises(KeyError, match="return_silhouette"):
        figures.imagination_view_outputs({"rotmat": rot, "betas": outputs["betas"]}, phis, body)


def test_loss_curves(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "w") as f:
        for step in range(0, 200, 10):
            f.write(json.dumps({"step": step, "loss": float(np.exp(-step / 20)) + 1e-4,
                                "lr": 1e-4, "tag": "train"}) + "\n")
            if step % 50 == 0:
                f.write(json.dumps({"step": step, "eval/mpjpe": 200.0 - step / 2}) + "\n")
    path = os.path.join(OUT, "loss_curves.png")
    keys = figures.loss_curves(str(metrics), path)
    assert keys == ["loss", "lr", "eval/mpjpe"]  # strings are skipped
    png = _read(path)
    assert png.shape == (300, 1200, 3)  # one row of three 4 x 3 inch panels at 100 dpi
    assert (png < 200).mean() > 0.01  # axes, curves and labels were drawn
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0, "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        figures.loss_curves(str(bad), os.path.join(OUT, "bad.png"))
    with pytest.raises(FileNotFoundError):
        figures.loss_curves(str(tmp_path / "missing.jsonl"), path)
