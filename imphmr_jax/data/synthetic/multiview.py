"""Multi-view generation: K calibrated look-at cameras around the same posed person."""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np

from imphmr_jax.data import pose_sampler
from imphmr_jax.data.synthetic.appearance import (Appearance, Background, Look,
                                                  sample_appearance, sample_background,
                                                  sample_occluders)
from imphmr_jax.data.synthetic.config import (KIND_MULTIVIEW, SyntheticConfig, sample_rng,
                                              uniform_deg)
from imphmr_jax.data.synthetic.placement import (camera_pose_labels, fit_depth, intrinsics,
                                                 look_at_rotation, projected_box,
                                                 world_placement)
from imphmr_jax.data.synthetic.records import Labels, Variant, make_record, progress_bar
from imphmr_jax.data.synthetic.renderer import (get_renderer, pad_rows, render_in_batches,
                                                stack_rows)


class View(NamedTuple):
    """Host-side draws of one camera of person ``slot`` (index within the chunk): view index,
    world -> camera rotation (3, 3) and translation (3,), focal (px), the person's appearance with
    this view's background, whether it is occluded, and the person's generator (it draws the
    occluders once every view of the chunk is placed)."""

    slot: int
    view: int
    rot: np.ndarray
    trans: np.ndarray
    focal: float
    appearance: Appearance
    background: Background
    occluded: bool
    rng: np.random.Generator


def _sample_views(config, rng, slot, num_views, verts_w, root_w) -> list:
    """The num_views cameras of one person: (V, 3) world vertices, (3,) world root, pixels."""
    size = config.image_size
    app = sample_appearance(rng, config)
    az0 = rng.uniform(0, 2 * np.pi)
    views = []
    for k in range(num_views):
        az = az0 + 2 * np.pi * k / num_views + math.radians(rng.uniform(-10, 10))
        rot = look_at_rotation(az, uniform_deg(rng, config.multiview_elevation_range),
                               uniform_deg(rng, config.roll_range))
        focal = rng.uniform(*config.focal_range) * size
        rel = (verts_w - root_w) @ rot.T
        d = fit_depth(rel[None], np.array([focal]),
                      np.array([rng.uniform(*config.fill_range) * size / 2]), size,
                      config.distance_range, centred=True)[0]
        trans = -rot @ root_w + np.array([0.0, 0.0, d])
        background = sample_background(rng, config.background_clutter)
        occluded = rng.random() < config.occluder_prob
        views.append(View(slot, k, rot, trans, focal, app, background, occluded, rng))
    return views


def generate_multiview(config: SyntheticConfig, split: str, num_people: int, num_views: int, *,
                       batch_size: int = 32, progress: bool = True) -> Iterator[dict]:
    """Yield num_people * num_views records: K calibrated cameras around each posed person.

    Person p stands with its root above the world origin (lowest vertex on y = 0) in a sampled
    pose; view k looks at the root from azimuth az0 + 2 pi k / K (+- 10 degrees jitter) at its own
    elevation, roll, focal length and distance (fitted so the person fills ``fill_range`` of the
    half image around the centre). Records carry schema.VARIANT_FIELDS: sequence = p, view = k,
    frame = 0, extrinsics [R | t] world -> camera, pose_world, transl_world; pose/cam_t/joints are
    that view's camera-frame labels. Appearance and background are per person (the background is
    a per-view draw). No truncation; occluders per view with occluder_prob; no 2D-only samples.
    imgname b'synthetic_multiview/<split>/p<person:06d>_v<view:02d>'.
    """
    if num_people < 0 or num_views < 1:
        raise ValueError(f"generate_multiview needs num_people >= 0 and num_views >= 1, got "
                         f"{num_people}, {num_views}")
    renderer = get_renderer(config.body)
    size = config.image_size
    per_chunk = max(1, batch_size // num_views)
    with progress_bar(num_people * num_views, progress, f"synthetic multiview {split}") as bar:
        for start in range(0, num_people, per_chunk):
            people = list(range(start, min(start + per_chunk, num_people)))
            rngs = [sample_rng(config, split, KIND_MULTIVIEW, p) for p in people]
            pose_w = np.concatenate([pose_sampler.sample_poses(r, 1, config.weights)[0]
                                     for r in rngs])
            betas = np.stack([r.normal(0.0, 1.0, 10) for r in rngs]).astype(np.float32)
            verts, joints = renderer.forward(pad_rows(pose_w, batch_size),
                                             pad_rows(betas, batch_size))
            verts, joints = verts[: len(people)], joints[: len(people)]
            transl_w = world_placement(verts, joints)
            views = [v for slot, r in enumerate(rngs)
                     for v in _sample_views(config, r, slot, num_views,
                                            verts[slot] + transl_w[slot],
                                            joints[slot, 0] + transl_w[slot])]
            slots = np.array([v.slot for v in views])
            rot = np.stack([v.rot for v in views])
            trans = np.stack([v.trans for v in views])
            pose_cam, cam_t = camera_pose_labels(rot, trans, pose_w[slots], transl_w[slots],
                                                 joints[slots, 0])
            world_v = verts[slots] + transl_w[slots][:, None]
            world_j = joints[slots] + transl_w[slots][:, None]
            verts_cam = np.einsum("nij,nvj->nvi", rot, world_v) + trans[:, None]
            verts_cam = verts_cam.astype(np.float32)
            joints_cam = np.einsum("nij,nvj->nvi", rot, world_j) + trans[:, None]
            intr = intrinsics(np.array([v.focal for v in views]), size)
            box = projected_box(verts_cam, intr)
            looks = [Look(v.appearance, v.background,
                          sample_occluders(v.rng, bool(v.occluded), np.clip(box.at(n), 0, size),
                                           size))
                     for n, v in enumerate(views)]
            rendered = render_in_batches(renderer, verts_cam, intr, stack_rows(looks), size,
                                         batch_size)
            for n, v in enumerate(views):
                p = people[v.slot]
                labels = Labels(joints_cam[n], intr[n], pose_cam[n], betas[v.slot], cam_t[n])
                variant = Variant(sequence=p, frame=0, view=v.view,
                                  extrinsics=np.concatenate([rot[n], trans[n][:, None]], 1),
                                  pose_world=pose_w[v.slot].reshape(-1),
                                  transl_world=transl_w[v.slot])
                yield make_record(config, rendered.image[n], rendered.mask[n], labels,
                                  f"synthetic_multiview/{split}/p{p:06d}_v{v.view:02d}",
                                  variant=variant)
                bar.update(1)
