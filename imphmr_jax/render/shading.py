"""Shading on top of the rasterizer: Lambert + ambient with per-vertex colours, composited over a
background; mesh overlays on images and a PNG writer for figures.

Camera frame as SPIN (x right, y down, z forward); images are float RGB in [0, 1], (B, H, W, 3).
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from imphmr_jax.render import rasterize as _raster

# Light from the camera, a little above and to the left (y is down): every visible surface gets
# some diffuse light and the body's relief still reads.
DEFAULT_LIGHT = (-0.3, -0.5, -1.0)
BODY_COLOR = (0.72, 0.74, 0.85)


def _light_direction(light):
    light = jnp.asarray(light, jnp.float32)
    return light / jnp.linalg.norm(light, axis=-1, keepdims=True)


def shade(fragments, vertices, faces, vertex_colors=None, *, light=DEFAULT_LIGHT, ambient=0.35,
          diffuse=0.65, background=None):
    """Lambert + ambient shading of rasterized meshes, composited over a background.

    Args:
      fragments: :class:`imphmr_jax.render.rasterize.Fragments` of these meshes.
      vertices: (B, V, 3) camera-space vertices (the ones that were rasterized).
      faces: (F, 3) int triangle vertex ids.
      vertex_colors: (B, V, 3) or (V, 3) RGB in [0, 1]; default a uniform light grey-blue.
      light: (3,) direction *towards* the light, camera frame (normalised here).
      ambient, diffuse: the two weights; shading = ambient + diffuse * max(0, n . l).
      background: None (black), an RGB triple, or an image (H, W, 3) / (B, H, W, 3) in [0, 1].

    Returns:
      (B, H, W, 3) float32 RGB in [0, 1].
    """
    batch, height, width = fragments.mask.shape
    if vertex_colors is None:
        vertex_colors = jnp.broadcast_to(jnp.asarray(BODY_COLOR, jnp.float32), vertices.shape)
    vertex_colors = jnp.broadcast_to(jnp.asarray(vertex_colors, jnp.float32), vertices.shape)
    normals = _raster.pixel_normals(fragments, vertices, faces)
    # Two-sided: a normal pointing away from the camera (open meshes, inverted winding) is flipped
    # towards it, so that the lit side is always the one we see.
    normals = jnp.where(normals[..., 2:3] > 0, -normals, normals)
    lambert = jnp.clip(jnp.sum(normals * _light_direction(light), axis=-1), 0.0, 1.0)
    color = _raster.interpolate(fragments, vertex_colors, faces)
    lit = jnp.clip(color * (ambient + diffuse * lambert)[..., None], 0.0, 1.0)
    if background is None:
        background = jnp.zeros(3, jnp.float32)
    background = jnp.broadcast_to(jnp.asarray(background, jnp.float32), (batch, height, width, 3))
    mask = fragments.mask[..., None]
    return jnp.where(mask, lit, background)


def render_shaded(vertices, faces, intrinsics, height, width, *, max_tiles=None, **shade_kwargs):
    """Rasterize and shade in one call. vertices (B, V, 3) camera space -> (B, H, W, 3) in [0, 1].

    ``max_tiles`` is the rasterizer's static work budget (see :func:`rasterize.rasterize`).
    """
    fragments = _raster.rasterize(vertices, faces, intrinsics, height, width, max_tiles=max_tiles)
    return shade(fragments, vertices, faces, **shade_kwargs)


def overlay(image, vertices, faces, camera, *, alpha=0.8, color=BODY_COLOR):
    """Draw shaded meshes over images.

    Args:
      image: (H, W, 3) or (B, H, W, 3), uint8 or float in [0, 1].
      vertices: (V, 3) or (B, V, 3) mesh vertices, in the camera frame unless ``camera`` has
        a rotation and translation.
      faces: (F, 3) int.
      camera: intrinsics (4,) / (B, 4) = [fx, fy, cx, cy] in pixels of ``image``, or a mapping
        with keys 'intrinsics' and optionally 'rotation' (3, 3) / (B, 3, 3) and 'translation'
        (3,) / (B, 3) for world -> camera (X_c = R X + t).
      alpha: opacity of the mesh over the image.

    Returns:
      The images with the meshes drawn, same shape and dtype as ``image``.
    """
    image = np.asarray(image)
    single = image.ndim == 3
    is_uint8 = image.dtype == np.uint8
    img = image.astype(np.float32) / (255.0 if is_uint8 else 1.0)
    img = img[None] if single else img
    verts = jnp.asarray(vertices, jnp.float32)
    verts = verts[None] if verts.ndim == 2 else verts
    if isinstance(camera, dict):
        intrinsics = camera["intrinsics"]
        if "rotation" in camera or "translation" in camera:
            rot = jnp.asarray(camera.get("rotation", np.eye(3)), jnp.float32)
            trans = jnp.asarray(camera.get("translation", np.zeros(3)), jnp.float32)
            rot = jnp.broadcast_to(rot, (verts.shape[0], 3, 3))
            trans = jnp.broadcast_to(trans, (verts.shape[0], 3))
            verts = jnp.einsum("bij,bvj->bvi", rot, verts) + trans[:, None]
    else:
        intrinsics = camera
    batch = max(img.shape[0], verts.shape[0])
    verts = jnp.broadcast_to(verts, (batch,) + verts.shape[1:])
    img = np.broadcast_to(img, (batch,) + img.shape[1:])
    height, width = img.shape[1:3]
    fragments = _raster.rasterize(verts, jnp.asarray(faces), jnp.asarray(intrinsics, jnp.float32),
                                  height, width)
    shaded = shade(fragments, verts, jnp.asarray(faces),
                   jnp.broadcast_to(jnp.asarray(color, jnp.float32), verts.shape), background=img)
    mask = np.asarray(fragments.mask)[..., None]
    out = np.where(mask, alpha * np.asarray(shaded) + (1 - alpha) * img, img)
    out = out[0] if single else out
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8) if is_uint8 else out.astype(np.float32)


def write_png(path, image):
    """Write an (H, W, 3) / (H, W) image, uint8 or float in [0, 1], as PNG (folders are created)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image).save(path)
    return path
