"""Hard rasterizer and soft silhouette against analytic truth (camera frame: x right, y down, z fwd)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imphmr_jax.render import rasterize as R
from imphmr_jax.render import soft as S


def pixel_rays(intr, h, w):
    """(H, W, 3) float64 rays through pixel centres, z component 1."""
    fx, fy, cx, cy = intr
    v, u = np.mgrid[:h, :w] + 0.5
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)


def ray_triangle(rays, tri, near):
    """Möller–Trumbore in float64: (hit mask, z, barycentrics) of rays from the origin."""
    v0, v1, v2 = np.asarray(tri, np.float64)
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(rays, e2)
    det = p @ e1
    inv = 1 / np.where(det == 0, 1, det)
    s = -v0
    b1 = (p @ s) * inv
    q = np.cross(s, e1)
    b2 = (rays @ q) * inv
    t = (q @ e2) * inv
    bary = np.stack([1 - b1 - b2, b1, b2], -1)
    hit = (det != 0) & (bary.min(-1) >= 0) & (t >= near)
    margin = np.abs(bary).min(-1)  # distance (in barycentric units) from an edge: ambiguous if ~0
    return hit, t, bary, margin


def icosphere(level):
    t = (1 + 5**0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t),
         (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
         (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
         (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(x) / np.linalg.norm(x) for x in v]
    for _ in range(level):
        mid, nf = {}, []
        def m(a, b):
            key = (min(a, b), max(a, b))
            if key not in mid:
                x = v[a] + v[b]
                v.append(x / np.linalg.norm(x))
                mid[key] = len(v) - 1
            return mid[key]
        for a, b, c in f:
            ab, bc, ca = m(a, b), m(b, c), m(c, a)
            nf += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = nf
    return np.array(v, np.float32), np.array(f, np.int32)


def test_unit_square_pixel_count_is_its_projected_area():
    z, f = 2.3, 97.0
    v = np.array([[[-.5, -.5, z], [.5, -.5, z], [.5, .5, z], [-.5, .5, z]]], np.float32)
    frag = R.rasterize(v, np.array([[0, 1, 2], [0, 2, 3]]), [f, f, 64.3, 63.8], 128, 128)
    assert int(frag.overflow[0]) == 0
    assert abs(int(frag.mask.sum()) / (f * f / z**2) - 1) < 0.01


def test_sphere_depth_and_coverage_match_ray_sphere_intersection():
    verts, faces = icosphere(3)  # 1280 faces, inscribed in the unit sphere
    centre, h = np.array([0.1, -0.2, 4.0]), 64
    intr = np.array([80.0, 80.0, 32.0, 32.0])
    frag = R.rasterize((verts + centre)[None], faces, intr, h, h)
    rays = pixel_rays(intr, h, h)
    # |t·r - c|² = 1  ->  t = (r·c - sqrt((r·c)² - |r|²(|c|² - 1))) / |r|²; z = t since r_z = 1.
    rr, rc = np.sum(rays**2, -1), rays @ centre
    disc = rc**2 - rr * (centre @ centre - 1)
    truth = disc > 0
    z_true = (rc - np.sqrt(np.maximum(disc, 0))) / rr
    mask, depth = np.asarray(frag.mask[0]), np.asarray(frag.depth[0])
    assert not np.any(mask & ~truth)  # an inscribed convex mesh lies inside the sphere
    assert 0.97 < mask.sum() / truth.sum() <= 1.0
    # A level-3 facet (circumradius ≈ 0.08 rad) sags ≤ 1 - cos(0.08) ≈ 0.003 below the sphere; the
    # depth error is that sag over the ray's incidence cosine, so the rim, where rays graze the
    # surface, is left out.
    core = mask & (disc > 0.5 * np.max(disc))
    assert np.all(depth[core] >= z_true[core] - 1e-5)
    assert np.max(np.abs(depth[core] - z_true[core])) < 0.02
    culled = R.rasterize((verts + centre)[None], faces, intr, h, h, cull_backfaces=True)
    np.testing.assert_array_equal(np.asarray(culled.mask), np.asarray(frag.mask))
    normals = np.asarray(R.vertex_normals(verts[None], faces)[0])
    assert np.min(np.sum(normals * verts, -1)) > 0.99  # outward, unit


def tilted_plane():
    # A large quad on the plane z = 3 + 0.4 x - 0.3 y, seen at an angle.
    xy = np.array([[-1.5, -1.2], [1.4, -1.3], [1.3, 1.1], [-1.2, 1.4]])
    v = np.concatenate([xy, (3 + 0.4 * xy[:, 0] - 0.3 * xy[:, 1])[:, None]], 1)
    return v.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def test_tilted_plane_depth_and_perspective_correct_interpolation_are_exact():
    v, faces = tilted_plane()
    intr = np.array([50.0, 55.0, 31.0, 33.0])
    frag = R.rasterize(v[None], faces, intr, 64, 64)
    rays = pixel_rays(intr, 64, 64)
    # On the plane z = 3 + 0.4 x - 0.3 y with (x, y) = z (rx, ry): z = 3 / (1 - 0.4 rx + 0.3 ry).
    z_true = 3 / (1 - 0.4 * rays[..., 0] + 0.3 * rays[..., 1])
    mask = np.asarray(frag.mask[0])
    assert mask.sum() > 1500
    np.testing.assert_allclose(np.asarray(frag.depth[0])[mask], z_true[mask], rtol=3e-6)
    attrs = R.interpolate(frag, jnp.asarray(v)[None], faces)[0]  # interpolate camera xyz
    np.testing.assert_allclose(np.asarray(attrs[..., 2])[mask], z_true[mask], rtol=3e-6)
    x_true = z_true * rays[..., 0]
    np.testing.assert_allclose(np.asarray(attrs[..., 0])[mask], x_true[mask], atol=1e-5)
    assert np.all(np.asarray(attrs)[~mask] == 0)


def test_rays_hitting_nothing_give_empty_fragments():
    v = np.array([[[2.0, 0, 1], [3.0, 0, 1], [2.0, 1, 1]]], np.float32)  # far right of the view
    frag = R.rasterize(v, np.array([[0, 1, 2]]), [20.0, 20.0, 16.0, 16.0], 32, 32)
    assert not np.any(frag.mask)
    assert np.all(np.asarray(frag.face_index) == -1) and np.all(np.asarray(frag.depth) == 0)


def test_nearer_triangle_wins_regardless_of_face_order():
    far = [[-1, -1, 5.0], [1, -1, 5.0], [0, 1, 5.0]]
    near = [[-1, 1, 3.0], [1, 1, 3.0], [0, -1, 3.0]]
    v = np.array([far + near], np.float32)
    for faces, near_id in [([[0, 1, 2], [3, 4, 5]], 1), ([[3, 4, 5], [0, 1, 2]], 0)]:
        frag = R.rasterize(v, np.array(faces), [30.0, 30.0, 16.0, 16.0], 32, 32)
        fid, depth = np.asarray(frag.face_index[0]), np.asarray(frag.depth[0])
        assert np.all(depth[16, 14:18] == 3.0) and np.all(fid[16, 14:18] == near_id)
        assert np.all((fid == near_id) == np.isclose(depth, 3.0))


def test_triangle_crossing_the_near_plane_renders_exactly_its_front_part():
    intr, h, near = np.array([40.0, 40.0, 32.0, 32.0]), 64, 0.5
    tri = np.array([[-0.5, -0.4, 2.0], [0.6, -0.3, 1.5], [0.1, 0.5, -1.0]], np.float32)
    frag = R.rasterize(tri[None], np.array([[0, 1, 2]]), intr, h, h, near=near)
    hit, z, _, margin = ray_triangle(pixel_rays(intr, h, h), tri, near)
    mask = np.asarray(frag.mask[0])
    sure = (margin > 1e-4) & (np.abs(z - near) > 1e-4)
    assert hit.sum() > 300 and int(frag.overflow[0]) == 0
    np.testing.assert_array_equal(mask[sure], hit[sure])
    behind = tri - np.array([0, 0, 2.5], np.float32)  # all z < 0
    assert not np.any(R.rasterize(behind[None], np.array([[0, 1, 2]]), intr, h, h).mask)


def test_partly_off_screen_triangle_matches_a_crop_of_a_larger_image():
    tri = np.array([[[-1.4, -0.2, 2.0], [0.3, -1.5, 2.0], [0.2, 0.9, 1.8]]], np.float32)
    faces = np.array([[0, 1, 2]])
    big = R.rasterize(tri, faces, [60.0, 60.0, 64.0, 64.0], 128, 128)
    small = R.rasterize(tri, faces, [60.0, 60.0, 32.0, 32.0], 64, 64)  # = rows/cols 32:96
    assert np.asarray(big.mask[0, :32]).any() and np.asarray(big.mask[0, :, :32]).any()
    np.testing.assert_array_equal(np.asarray(small.mask[0]), np.asarray(big.mask[0, 32:96, 32:96]))
    np.testing.assert_allclose(np.asarray(small.depth[0]), np.asarray(big.depth[0, 32:96, 32:96]),
                               rtol=1e-6)


def test_shared_edges_and_vertices_cover_every_pixel_exactly_once():
    # A 3×3-vertex grid with vertices and diagonals exactly on pixel centres (the worst case for
    # ties), on a slightly tilted plane; the faces fan around the centre vertex.
    g = np.array([[x, y] for y in (-1, 0, 1) for x in (-1, 0, 1)], np.float64)
    z = 4 + 0.1 * g[:, 0]
    v = np.concatenate([g * 0.5 * z[:, None], z[:, None]], 1).astype(np.float32)  # u,v = 10·g·...
    faces = np.array([[0, 1, 4], [1, 2, 4], [2, 5, 4], [5, 8, 4], [8, 7, 4], [7, 6, 4], [6, 3, 4],
                      [3, 0, 4]])
    intr, h = [24.0, 24.0, 16.5, 16.5], 33  # centre vertex on the centre of pixel (16, 16)
    # Unshared copies of the vertices (ties must not depend on vertex ids); image i < 8 shows face
    # i alone (the others are moved behind the camera), image 8 shows all faces.
    nf = len(faces)
    soup = np.repeat(v[faces.reshape(-1)][None], nf + 1, 0)
    for i in range(nf):
        others = np.arange(3 * nf) // 3 != i
        soup[i, others, 2] = -5.0
    frag = R.rasterize(soup, np.arange(3 * nf).reshape(nf, 3), intr, h, h)
    count = np.sum(np.asarray(frag.mask[:nf]), 0)
    assert count.max() == 1  # no double coverage
    uv = np.mgrid[:h, :h] + 0.5
    interior = (np.abs(uv[0] - 16.5) < 11.9) & (np.abs(uv[1] - 16.5) < 11.9)
    assert np.all(count[interior] == 1)  # no holes, also at the centre vertex
    np.testing.assert_array_equal(np.asarray(frag.mask[nf]), count == 1)


def test_jit_needs_a_static_tile_budget_and_reports_overflow():
    v, faces = tilted_plane()
    with pytest.raises(ValueError, match="max_tiles"):
        jax.jit(lambda x: R.rasterize(x, faces, [50.0, 55.0, 31.0, 33.0], 64, 64).mask)(v[None])
    frag = jax.jit(lambda x: R.rasterize(x, faces, [50.0, 55.0, 31.0, 33.0], 64, 64,
                                         max_tiles=16))(v[None])
    assert int(frag.overflow[0]) > 0


def square_mesh():
    v = np.array([[[-.3, -.2, 2.0], [.35, -.25, 2.1], [.3, .3, 2.2], [-.25, .2, 1.9]]], np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def test_soft_silhouette_tends_to_the_hard_one_as_sigma_shrinks():
    v, faces = square_mesh()
    intr, h = [40.0, 40.0, 16.0, 16.0], 32
    hard = R.silhouette(v, faces, intr, h, h)
    budget = R.required_tiles(v, faces, intr, h, h, margin=3 * 0.1 * h / 2)  # reach at sigma=1e-2
    soft = jax.jit(lambda s: S.soft_silhouette(v, faces, intr, h, h, sigma=s, max_tiles=budget))
    errs = [float(jnp.mean(jnp.abs(soft(s) - hard))) for s in (1e-2, 1e-3, 1e-4, 1e-6)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 0.01 and errs[0] > 0.05


def test_soft_silhouette_gradients_match_finite_differences():
    with jax.enable_x64(True):
        v = jnp.array([[-0.21, -0.13, 2.0], [0.27, -0.02, 2.3], [0.05, 0.31, 1.9]], jnp.float64)
        faces = np.array([[0, 1, 2]])
        w = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (16, 16)))
        # A weighted sum of soft pixels, one value per image of a batch of vertex sets.
        loss = jax.jit(lambda x: jnp.sum(w * S.soft_silhouette(
            x, faces, [20.0, 20.0, 8.0, 8.0], 16, 16, sigma=3e-3, max_tiles=64), axis=(1, 2)))
        grad = jax.grad(lambda x: loss(x[None])[0])(v)
        assert grad.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(grad)))
        eps = 1e-6
        steps = eps * jnp.eye(9).reshape(9, 3, 3)
        fd = (loss(v + steps) - loss(v - steps)) / (2 * eps)  # central differences, one batch
        np.testing.assert_allclose(np.asarray(grad).reshape(-1), np.asarray(fd), rtol=1e-4,
                                   atol=1e-6)
        assert np.abs(fd).max() > 0.1


def test_default_small_body_renders_a_plausible_silhouette_from_3m():
    import smpl_jax
    model = smpl_jax.load("default-small")
    verts = smpl_jax.forward(model, jnp.zeros((1, 24, 3)), jnp.zeros((1, 10))).vertices
    cam = verts * jnp.array([1.0, -1.0, -1.0]) + jnp.array([0.0, 0.0, 3.0])  # y up -> y down
    f, h = 150.0, 128
    frag = R.rasterize(cam, model.faces, [f, f, 64.0, 64.0], h, h)
    mask = np.asarray(frag.mask[0])
    rows = np.nonzero(mask.any(1))[0]
    assert int(frag.overflow[0]) == 0
    assert 0.8 < (rows[-1] - rows[0] + 1) / (f * 1.7 / 3) < 1.2  # ~1.7 m tall at 3 m
    assert 0.04 < mask.mean() < 0.25
    assert mask[:, 64].sum() > 0.5 * (rows[-1] - rows[0])  # a body, not scattered pixels


def _posed_default_small(n=6, seed=0):
    """n default-small bodies in random poses, camera frame, about 2.5 m away."""
    import smpl_jax
    model = smpl_jax.load("default-small")
    rng = np.random.default_rng(seed)
    pose = rng.normal(0.0, 0.35, (n, 24, 3)).astype(np.float32)
    pose[:, 0] = [np.pi, 0.0, 0.0]  # y up -> the camera's y down
    pose[1:, 0] += rng.normal(0.0, 0.6, (n - 1, 3))
    verts = smpl_jax.forward(model, jnp.asarray(pose), jnp.asarray(
        rng.normal(0, 1, (n, 10)), jnp.float32)).vertices
    return np.asarray(verts + jnp.array([0.0, 0.2, 2.5])), np.asarray(model.faces)


def test_silhouette_equals_the_rasterized_mask_and_culling_is_exact_for_a_closed_mesh():
    """`silhouette` (coverage only) = `rasterize(...).mask`; the default-small body is closed
    (every edge in two faces), so culling back faces changes no pixel while it needs fewer tiles."""
    verts, faces = _posed_default_small()
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    assert set(np.unique(edges, axis=0, return_counts=True)[1]) == {2}
    intr, h = [150.0, 150.0, 48.0, 48.0], 96
    mask = np.asarray(R.rasterize(verts, faces, intr, h, h).mask, np.float32)
    assert 0.03 < mask.mean() < 0.4
    np.testing.assert_array_equal(R.silhouette(verts, faces, intr, h, h), mask)
    culled, overflow = R.silhouette(verts, faces, intr, h, h, cull_backfaces=True,
                                    return_overflow=True)
    np.testing.assert_array_equal(culled, mask)
    assert not np.any(overflow)
    assert (R.required_tiles(verts, faces, intr, h, h, cull_backfaces=True, multiple=1)
            < 0.7 * R.required_tiles(verts, faces, intr, h, h, multiple=1))
    # a budget too small is reported
    _, cut = R.silhouette(verts, faces, intr, h, h, cull_backfaces=True, max_tiles=64,
                          return_overflow=True)
    assert np.all(np.asarray(cut) > 0)
