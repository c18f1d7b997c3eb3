"""The batched, jitted scene renderer: the body's forward pass, rasterization
(:mod:`imphmr_jax.render.rasterize`), Lambert shading over a procedural background, occluders and
grain; and the fixed-shape batching the generators render through.

Flat people (``Appearance.texture is None``) get per-vertex colours; textured people
(``SyntheticConfig.texture = 'procedural'``) a per-pixel :mod:`.texture` evaluated at the canonical
surface point. Whether a batch is textured is part of its pytree structure, so each case compiles
its own program and the flat one is exactly the program it always was.

One :class:`SceneRenderer` per body (:func:`get_renderer`). Images are (B, S, S, 3) uint8 RGB in
the camera frame of :mod:`imphmr_jax.geometry.camera` (x right, y down, z forward, metres).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import smpl_jax
from smpl_jax.numerics import safe_div
from imphmr_jax.data.synthetic import texture as _texture
from imphmr_jax.data.synthetic.appearance import JOINT_REGION, REGIONS, Background, Look
from imphmr_jax.render import rasterize as _raster
from imphmr_jax.render import shading as _shading

_NEAR = 0.05  # rasterizer near plane, metres


class Rendered(NamedTuple):
    """Renderer outputs (numpy): image (B, S, S, 3) uint8, mask (B, S, S) bool (the full
    silhouette), occluded (B, S, S) bool (mask pixels under an occluder), background
    (B, S, S, 3) uint8, overflow (B,) int32 (always 0: an overflowing batch is re-rendered)."""

    image: np.ndarray
    mask: np.ndarray
    occluded: np.ndarray
    background: np.ndarray
    overflow: np.ndarray


class BodyMesh(NamedTuple):
    """Per-body arrays the jitted renderer takes as arguments: faces (F, 3) int32, region_weights
    (V, 7) (REGIONS order), rest_height (V,) metres, fabric (V,) brightness jitter."""

    faces: jax.Array
    region_weights: jax.Array
    rest_height: jax.Array
    fabric: jax.Array


def _pixel_grid(size):
    c = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    return c[None, :], c[:, None]  # x (1, S), y (S, 1)


def paint_shapes(image, shapes, size):
    """Paint (B, K, 14) shape rows (see :mod:`.appearance`) over (B, S, S, 3) images; returns the
    images and the (B, S, S) bool cover of the shapes."""
    x, y = _pixel_grid(size)
    cover = jnp.zeros(image.shape[:3], bool)
    for k in range(shapes.shape[1]):
        s = shapes[:, k]
        g = lambda i: s[:, i, None, None]  # noqa: E731
        dx, dy = x - g(0), y - g(1)
        ca, sa = jnp.cos(g(4)), jnp.sin(g(4))
        lx, ly = ca * dx + sa * dy, -sa * dx + ca * dy
        qx, qy = safe_div(lx, g(2), 1e-6), safe_div(ly, g(3), 1e-6)
        kind = g(5)
        inside = jnp.where(kind < 0.5, qx * qx + qy * qy <= 1.0,
                           jnp.where(kind < 1.5, jnp.maximum(jnp.abs(qx), jnp.abs(qy)) <= 1.0,
                                     (qy <= 1.0) & (jnp.abs(qx) <= (qy + 1.0) * 0.5)))
        inside = inside & (g(6) > 0.5)
        stripe = (g(7) > 0) & (jnp.sin(2 * jnp.pi * g(7) * lx) > 0)
        color = jnp.where(stripe[..., None], s[:, None, None, 11:14], s[:, None, None, 8:11])
        image = jnp.where(inside[..., None], color, image)
        cover = cover | inside
    return image, cover


def _background(bg: Background, size):
    """(B, S, S, 3) procedural backgrounds in [0, 1] from stacked sample_background parameters."""
    colors, params, waves = bg.colors, bg.params, bg.waves
    x, y = _pixel_grid(size)
    p = lambda i: params[:, i, None, None]  # noqa: E731
    ga = p(0)
    t = jnp.clip(0.5 + (jnp.cos(ga) * (x - 0.5) + jnp.sin(ga) * (y - 0.5)), 0.0, 1.0)
    grad = (1 - t[..., None]) * colors[:, None, None, 0] + t[..., None] * colors[:, None, None, 1]
    pa = p(3)
    lx = jnp.cos(pa) * x + jnp.sin(pa) * y
    ly = -jnp.sin(pa) * x + jnp.cos(pa) * y
    f = p(2)
    stripes = jnp.sin(2 * jnp.pi * f * lx + p(4)) > 0
    checker = (jnp.sin(2 * jnp.pi * f * lx + p(4)) * jnp.sin(2 * jnp.pi * f * ly)) > 0
    wave = sum(jnp.sin(2 * jnp.pi * (waves[:, i, 0, None, None] * x
                                     + waves[:, i, 1, None, None] * y) + waves[:, i, 2, None, None])
               for i in range(waves.shape[1])) / math.sqrt(waves.shape[1])
    noise = jax.nn.sigmoid(3.0 * wave)
    kind = p(1)
    w = jnp.where(kind < 0.5, stripes.astype(jnp.float32),
                  jnp.where(kind < 1.5, checker.astype(jnp.float32), noise))
    w = w[..., None]
    pattern = (1 - w) * colors[:, None, None, 2] + w * colors[:, None, None, 3]
    alpha = jnp.where(kind > 2.5, 0.0, p(5))[..., None]
    image = (1 - alpha) * grad + alpha * pattern
    image, _ = paint_shapes(image, bg.shapes, size)
    return image


def _vertex_colors(mesh: BodyMesh, region_colors, stripe, stripe_color):
    """(B, V, 3) albedo from (B, 7, 3) region colours, (B, 4) stripes, (B, 3) stripe colour."""
    rw = mesh.region_weights
    base = jnp.einsum("vr,brc->bvc", rw, region_colors)
    on, freq, phase, long_sleeve = (stripe[:, i, None] for i in range(4))
    band = (on > 0.5) & (jnp.sin(2 * jnp.pi * freq * mesh.rest_height[None] + phase) > 0)
    shirt_w = rw[None, :, 2] + long_sleeve * rw[None, :, 3]
    delta = stripe_color[:, None, :] - region_colors[:, None, 2, :]
    base = base + jnp.where(band, shirt_w, 0.0)[..., None] * delta
    return jnp.clip(base * mesh.fabric[None, :, None], 0.0, 1.0)


def _render_impl(mesh: BodyMesh, verts_cam, intr, look: Look, rest_vertices=None, *, size,
                 max_tiles) -> Rendered:
    """Rasterize, shade over the background, paint occluders, add grain (all batched).

    rest_vertices: (V, 3) template vertices, needed (only) when ``look.appearance.texture`` is set.
    """
    app = look.appearance
    # The body is a closed, outward-wound mesh: culling back faces leaves the silhouette and the
    # visible surface unchanged and halves the rasterizer's work.
    frags = _raster.rasterize(verts_cam, mesh.faces, intr, size, size, near=_NEAR,
                              max_tiles=max_tiles, cull_backfaces=True)
    background = _background(look.background, size)
    shade = app.shade
    if app.texture is None:
        albedo = _vertex_colors(mesh, app.region_colors, app.stripe, app.stripe_color)
        image = _shading.shade(frags, verts_cam, mesh.faces, albedo,
                               light=app.light[:, None, None, :], ambient=shade[:, 0, None, None],
                               diffuse=shade[:, 1, None, None], background=background)
    else:
        image = _texture.shade(frags, verts_cam, mesh.faces, rest_vertices, mesh.region_weights,
                               app.region_colors, app.texture, light=app.light[:, None, None, :],
                               ambient=shade[:, 0, None, None], diffuse=shade[:, 1, None, None],
                               background=background)
    image, occluded = paint_shapes(image, look.occluders, size)
    keys = jax.vmap(jax.random.key)(app.noise_seed)
    noise = jax.vmap(lambda k: jax.random.uniform(k, (size, size, 1), minval=-1.0,
                                                  maxval=1.0))(keys)
    grain = (shade[:, 2] + look.background.params[:, 6])[:, None, None, None]
    image = jnp.clip(image + grain * noise, 0.0, 1.0)
    to_u8 = lambda im: jnp.round(im * 255.0).astype(jnp.uint8)  # noqa: E731
    return Rendered(image=to_u8(image), mask=frags.mask, occluded=occluded & frags.mask,
                    background=to_u8(background), overflow=frags.overflow)


def _region_weights(model) -> np.ndarray:
    """(V, 7) soft per-vertex REGIONS weights from the skinning weights, with a hair cap."""
    weights = np.asarray(model.weights, np.float64)
    vt = np.asarray(model.v_template, np.float64)
    head = np.asarray(model.joint_template)[15]
    onehot = np.eye(len(REGIONS))[JOINT_REGION]  # (24, R)
    region_w = weights @ onehot
    # Hair: the top of the head and the back of the skull.
    crown = vt[:, 1] > head[1] + 0.075
    back = (vt[:, 2] < head[2] - 0.02) & (vt[:, 1] > head[1] - 0.02)
    hair = (weights[:, 15] > 0.5) & (crown | back)
    region_w[hair, 1] += region_w[hair, 0]
    region_w[hair, 0] = 0.0
    region_w = region_w ** 4  # sharper borders between regions, still smooth
    region_w /= region_w.sum(1, keepdims=True)
    return region_w


class SceneRenderer:
    """Batched, jitted rendering of posed bodies with clothes, light, background and occluders.

    One instance per body (see :func:`get_renderer`); it holds the per-vertex region weights
    (from the skinning weights), the rest-pose height used by shirt stripes, a fixed per-vertex
    fabric brightness jitter, and the template vertices procedural textures are evaluated on.
    """

    def __init__(self, body: str):
        self.body_name = body
        self.model = smpl_jax.load(body)
        self.faces = jnp.asarray(self.model.faces, jnp.int32)
        vt = np.asarray(self.model.v_template, np.float64)
        self.region_weights = jnp.asarray(_region_weights(self.model), jnp.float32)
        self.rest_height = jnp.asarray(vt[:, 1], jnp.float32)
        fabric = np.random.default_rng(1234).uniform(0.93, 1.07, vt.shape[0])
        self.fabric = jnp.asarray(fabric, jnp.float32)
        self.rest_vertices = jnp.asarray(vt, jnp.float32)
        self._forward = jax.jit(functools.partial(smpl_jax.forward, extra_joints=("spin49",)))
        # Mesh arrays travel as jit arguments (closing over them would bake large constants into
        # the program, which XLA then spends a long time folding).
        self._mesh = BodyMesh(self.faces, self.region_weights, self.rest_height, self.fabric)
        self._render = jax.jit(_render_impl, static_argnames=("size", "max_tiles"))
        # Static tile budget per image size: the exact need of the first batch rounded up to a
        # power of two; a batch that overflows it is re-rendered with a larger budget (so the
        # budget only grows and jit recompiles rarely). Results do not depend on the budget.
        self._budget: dict = {}

    def vertex_colors(self, region_colors, stripe, stripe_color):
        """(B, V, 3) albedo: region colours blended by region weights, shirt stripes, fabric."""
        return _vertex_colors(self._mesh, jnp.asarray(region_colors), jnp.asarray(stripe),
                              jnp.asarray(stripe_color))

    def forward(self, pose, betas):
        """(B, 24, 3) axis-angle, (B, 10) -> numpy vertices (B, V, 3), joints (B, 73, 3)."""
        out = self._forward(self.model, jnp.asarray(pose, jnp.float32),
                            jnp.asarray(betas, jnp.float32))
        return np.asarray(out.vertices), np.asarray(out.joints)

    def render(self, verts_cam, intrinsics, look: Look, size: int) -> Rendered:
        """Render (B, V, 3) camera-frame vertices with (B, 4) intrinsics and a stacked Look."""
        verts_cam = jnp.asarray(verts_cam, jnp.float32)
        intr = jnp.asarray(intrinsics, jnp.float32)
        look = jax.tree.map(jnp.asarray, look)
        size = int(size)
        max_tiles = self._budget.get(size, 0)
        for attempt in range(2):
            if attempt or not max_tiles:
                need = _raster.required_tiles(verts_cam, self.faces, intr, size, size, near=_NEAR,
                                              multiple=1, cull_backfaces=True)
                max_tiles = max(max_tiles, 1024, 1 << (need - 1).bit_length())
                self._budget[size] = max_tiles
            if look.appearance.texture is None:
                out = self._render(self._mesh, verts_cam, intr, look, size=size,
                                   max_tiles=max_tiles)
            else:
                out = self._render(self._mesh, verts_cam, intr, look, self.rest_vertices,
                                   size=size, max_tiles=max_tiles)
            out = jax.device_get(out)
            if not np.any(out.overflow != 0):
                return out
        raise RuntimeError(f"rasterizer overflow {out.overflow} with max_tiles={max_tiles}")


# A renderer holds its body and compiled programs. A process renders one body (the tests two:
# 'default' and 'default-small'), so two stay warm; more bodies evict the oldest instead of
# accumulating (an evicted body only costs a reload and recompilation).
@functools.lru_cache(maxsize=2)
def get_renderer(body: str) -> SceneRenderer:
    """The :class:`SceneRenderer` of ``body``, reused across calls (bounded LRU of 2 bodies)."""
    return SceneRenderer(body)


def pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    """Pad an (m, ...) array to n rows by repeating the last (keeps compiled shapes fixed)."""
    m = x.shape[0]
    return x if m == n else np.concatenate([x, np.repeat(x[-1:], n - m, 0)], 0)


def stack_rows(rows):
    """Stack a list of same-structured pytrees (e.g. Look) leaf by leaf along a new first axis."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *rows)


def _chunk(x, start, stop, n):
    return pad_rows(x[start:stop], n)


def forward_in_batches(renderer: SceneRenderer, pose, betas, batch_size: int):
    """Vertices (N, V, 3) and joints (N, 73, 3) (``forward(..., extra_joints=('spin49',))``, no
    translation) of (N, 24, 3) axis-angle poses and (N, 10) betas, in chunks of batch_size (the
    last one padded), so one compiled program serves every chunk."""
    verts, joints = [], []
    for s in range(0, pose.shape[0], batch_size):
        e = min(s + batch_size, pose.shape[0])
        v, j = renderer.forward(pad_rows(pose[s:e], batch_size), pad_rows(betas[s:e], batch_size))
        verts.append(v[: e - s])
        joints.append(j[: e - s])
    return np.concatenate(verts), np.concatenate(joints)


def render_in_batches(renderer: SceneRenderer, verts_cam, intr, look: Look, size: int,
                      batch_size: int) -> Rendered:
    """Render N samples ((N, V, 3) vertices, (N, 4) intrinsics, a Look stacked to N) in fixed-size
    chunks of batch_size (the last one padded), so one compiled program serves every chunk."""
    n = verts_cam.shape[0]
    outs = []
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        chunk = functools.partial(_chunk, start=s, stop=e, n=batch_size)
        out = renderer.render(chunk(verts_cam), chunk(intr), jax.tree.map(chunk, look), size)
        outs.append(jax.tree.map(lambda x, m=e - s: x[:m], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs, 0), *outs)
