"""Shading, overlays and figures: Lambert + ambient is exact on planes, colours interpolate,
backgrounds composite, overlays leave the image alone off the mesh, and the default body renders
shaded / as a silhouette / as a depth map from the front and from phi = 90 degrees."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

import smpl_jax
from imphmr_jax.geometry import camera, views
from imphmr_jax.render import rasterize, shading

H = W = 32
INTR = np.array([40.0, 40.0, 16.0, 16.0], np.float32)


def quad(z0=2.0, tilt=0.0):
    """A 2 m square centred on the optical axis at depth z0, rotated by `tilt` about y."""
    c, s = np.cos(tilt), np.sin(tilt)
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
    verts = corners @ rot.T + np.array([0, 0, z0], np.float32)
    return jnp.asarray(verts[None]), jnp.asarray([[0, 1, 2], [0, 2, 3]], jnp.int32)


@pytest.mark.parametrize("tilt", [0.0, 0.6])
def test_lambert_plus_ambient_is_exact_on_a_plane(tilt):
    verts, faces = quad(tilt=tilt)
    light = (0.0, 0.0, -1.0)  # towards the camera
    img = shading.render_shaded(verts, faces, INTR, H, W, vertex_colors=jnp.ones((1, 4, 3)),
                                light=light, ambient=0.3, diffuse=0.7)
    centre = np.asarray(img)[0, H // 2, W // 2]
    np.testing.assert_allclose(centre, 0.3 + 0.7 * np.cos(tilt), atol=1e-5)


def test_vertex_colours_interpolate_and_background_composites():
    verts, faces = quad(z0=4.0)
    colors = jnp.broadcast_to(jnp.asarray([0.2, 0.4, 0.6]), (1, 4, 3))
    bg = np.zeros((H, W, 3), np.float32)
    bg[..., 1] = 1.0
    img = np.asarray(shading.render_shaded(verts, faces, INTR, H, W, vertex_colors=colors,
                                           light=(0, 0, -1), ambient=1.0, diffuse=0.0, background=bg))
    frag = rasterize.rasterize(verts, faces, INTR, H, W)
    mask = np.asarray(frag.mask)[0]
    assert 0 < mask.sum() < H * W
    np.testing.assert_allclose(img[0][mask], np.broadcast_to([0.2, 0.4, 0.6], img[0][mask].shape), atol=1e-6)
    np.testing.assert_array_equal(img[0][~mask], bg[~mask])


def test_overlay_changes_only_pixels_on_the_mesh_and_accepts_a_world_camera():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    verts, faces = quad(z0=0.0)
    rot = np.eye(3, dtype=np.float32)
    world_cam = {"intrinsics": INTR, "rotation": rot, "translation": np.array([0, 0, 4.0], np.float32)}
    out_world = shading.overlay(image, np.asarray(verts[0]), np.asarray(faces), world_cam)
    out_cam = shading.overlay(image, np.asarray(verts[0]) + [0, 0, 4.0], np.asarray(faces), INTR)
    assert out_world.dtype == np.uint8 and out_world.shape == image.shape
    np.testing.assert_array_equal(out_world, out_cam)
    frag = rasterize.rasterize(jnp.asarray(verts) + jnp.asarray([0, 0, 4.0]), faces, INTR, H, W)
    mask = np.asarray(frag.mask)[0]
    np.testing.assert_array_equal(out_cam[~mask], image[~mask])
    assert np.abs(out_cam[mask].astype(int) - image[mask]).mean() > 5


def test_write_png_round_trips(tmp_path):
    from PIL import Image

    img = np.random.default_rng(1).random((8, 9, 3)).astype(np.float32)
    path = shading.write_png(tmp_path / "sub" / "a.png", img)
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, (img * 255).round().astype(np.uint8))


def body_in_camera(vertices, root, phi, distance):
    """SMPL-frame vertices (y up, facing +z) -> SPIN camera frame (y down) at azimuth phi, `distance` m away."""
    upright = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # rotation by pi about x: y up -> y down
    canonical = (np.asarray(vertices) - root) @ upright.T
    rotated = views.rotate_points(jnp.asarray(canonical), jnp.asarray(phi, jnp.float32))
    return rotated + jnp.asarray([0.0, 0.0, distance])


def test_default_body_figure_shaded_silhouette_depth_front_and_side():
    body = smpl_jax.load("default")
    out = smpl_jax.forward(body, np.zeros((1, 24, 3), np.float32), np.zeros((1, 10), np.float32))
    size, distance = 192, 3.9
    intr = camera.intrinsics(size * 1.9, size, size)  # ~29 degree field of view
    verts = jnp.concatenate([body_in_camera(out.vertices[0], out.joints[0, 0], phi, distance)[None]
                             for phi in (0.0, np.pi / 2)])
    faces = body.faces
    frag = rasterize.rasterize(verts, faces, intr, size, size)
    assert int(np.asarray(frag.overflow).max()) == 0
    shaded = np.asarray(shading.shade(frag, verts, faces, background=(1.0, 1.0, 1.0)))
    sil = np.asarray(frag.mask, np.float32)
    depth = np.asarray(frag.depth)
    # Front view: arms spread (T-pose) so the silhouette is wide; side view: narrow.
    width_front = np.ptp(np.nonzero(sil[0].any(0))[0])
    width_side = np.ptp(np.nonzero(sil[1].any(0))[0])
    assert width_front > 3 * width_side
    # Depth lies on the body: within half the arm span (0.85 m) of the root's distance.
    assert np.all(np.abs(depth[sil > 0] - distance) < 0.9)
    assert np.ptp(depth[1][sil[1] > 0]) > 0.8 and np.ptp(depth[0][sil[0] > 0]) < 0.5
    # Upright in the image: the head (low row numbers) is above the feet.
    rows = np.nonzero(sil[0].any(1))[0]
    assert rows.min() < size * 0.2 and rows.max() > size * 0.8

    def depth_rgb(d, m):
        lo, hi = d[m > 0].min(), d[m > 0].max()
        g = np.where(m > 0, 1.0 - 0.8 * (d - lo) / (hi - lo + 1e-9), 1.0)
        return np.repeat(g[..., None], 3, -1)

    rows_img = [np.concatenate([shaded[i], np.repeat(1.0 - sil[i][..., None], 3, -1),
                                depth_rgb(depth[i], sil[i])], 1) for i in range(2)]
    figure = np.concatenate(rows_img, 0)
    path = shading.write_png(os.path.join("tests", "_output", "render_default_body.png"), figure)
    assert os.path.getsize(path) > 5000
