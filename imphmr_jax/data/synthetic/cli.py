"""Command line: ``python -m imphmr_jax.data.synthetic [--figure PATH] [--multiview-video-figure
PATH] [--bench N]``: a figure of samples with their labels drawn, the multiview_video figure, and a
generation benchmark."""
from __future__ import annotations

import argparse
import io
import os
import time

import jax
import numpy as np
from PIL import Image

from imphmr_jax.cli import InputError, expand_path
from imphmr_jax.data import draw
from imphmr_jax.data.synthetic.config import SyntheticConfig
from imphmr_jax.data.synthetic.single import generate


def sample_figure(config: SyntheticConfig, split: str = "train", rows: int = 4, cols: int = 6):
    """(H, W, 3) uint8 grid of the first rows*cols records with their box and keypoints drawn."""
    tiles = []
    for rec in generate(config, split, rows * cols, progress=False):
        img = np.asarray(Image.open(io.BytesIO(rec["image"])).convert("RGB"))
        tiles.append(draw.draw_keypoints(img, rec["keypoints_2d"],
                                         box=(rec["center"], rec["scale"]),
                                         radius=max(1.0, config.image_size / 100)))
    return draw.grid(tiles, rows, cols)


def main(argv=None):
    """``python -m imphmr_jax.data.synthetic [--figure PATH] [--multiview-video-figure PATH]
    [--bench N] [--image-size S]``."""
    ap = argparse.ArgumentParser(prog="python -m imphmr_jax.data.synthetic",
                                 description=main.__doc__)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--figure", default="", help="write a 4x6 grid of train samples here (PNG)")
    ap.add_argument("--multiview-video-figure", default="",
                    help="write the multiview_video figure (one person: frames x cameras and a "
                         "texture zoom, 256 px) here (PNG)")
    ap.add_argument("--bench", type=int, default=0, help="time generating this many images")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    try:
        config = SyntheticConfig(image_size=args.image_size)
    except ValueError as e:  # the options' checks: the user's input
        raise InputError(f"--image-size {args.image_size}: {e}") from e
    if args.figure:
        args.figure = expand_path(args.figure)
        os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
        fig = sample_figure(config)
        Image.fromarray(fig).quantize(colors=256, dither=Image.Dither.NONE).save(args.figure,
                                                                                  optimize=True)
        print(f"wrote {args.figure} ({os.path.getsize(args.figure) / 1024:.0f} KiB)")
    if args.multiview_video_figure:
        from imphmr_jax.data.synthetic.multiview_video import multiview_video_figure
        path = expand_path(args.multiview_video_figure)
        multiview_video_figure(path)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
    if args.bench:
        t = time.perf_counter()
        for _ in generate(config, "train", args.batch_size, batch_size=args.batch_size,
                          progress=False):
            pass
        warm = time.perf_counter() - t
        t = time.perf_counter()
        n = 0
        for _ in generate(config, "bench", args.bench, batch_size=args.batch_size, progress=False):
            n += 1
        dt = time.perf_counter() - t
        print(f"image_size {args.image_size}, batch {args.batch_size}: first batch (compile) "
              f"{warm:.1f} s; {n} images in {dt:.1f} s = {n / dt:.1f} images/s "
              f"on {jax.devices()[0].platform}")
