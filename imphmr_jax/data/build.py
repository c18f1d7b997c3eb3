"""Build a dataset: `python -m imphmr_jax.data.build --dataset NAME --data_dir DIR [options]`.

Real datasets (h36m, mpi_inf_3dhp, pw3d, pw3d_occ, coco_eft, mpii_eft, lspet_eft, lsp) need
`--manual_dir` (the dataset root with the SPIN/PARE npz files; see docs/datasets.md) and accept
`--precrop_margin X --on_bad_image skip|error --jpeg_quality Q --splits a,b`.
`synthetic_humans` accepts `--config default|multiview|video --num_train N --num_test N
--image_size S --body NAME --seed K --num_views V --num_frames F`.
Counts of written/skipped samples are printed and stored in the dataset's metadata.json.
"""
from __future__ import annotations

import argparse
import json
import logging

REAL_OPTIONS = ("precrop_margin", "on_bad_image", "jpeg_quality", "splits", "image_dir", "mask_dir")
SYNTHETIC_OPTIONS = ("num_train", "num_test", "image_size", "body", "seed", "fraction_2d_only",
                     "num_views", "num_frames", "batch_size")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imphmr_jax.data.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset name, e.g. h36m, pw3d, synthetic_humans")
    p.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
    p.add_argument("--manual_dir", default=None, help="dataset root with npz files and images")
    p.add_argument("--config", default=None, help="builder config (synthetic_humans: "
                   "default, multiview, video)")
    p.add_argument("--overwrite", action="store_true", help="delete and rebuild an existing build")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("real datasets")
    g.add_argument("--precrop_margin", type=float, default=None,
                   help="store crops of side X * 200 * scale around the box (JPEG) instead of "
                        "the original images")
    g.add_argument("--on_bad_image", choices=("skip", "error"), default=None)
    g.add_argument("--jpeg_quality", type=int, default=None)
    g.add_argument("--splits", default=None, help="comma-separated subset of the splits")
    g.add_argument("--image_dir", default=None, help="image root if not manual_dir")
    g.add_argument("--mask_dir", default=None, help="LSP: UPI-S1H mask root")
    g = p.add_argument_group("synthetic_humans")
    g.add_argument("--num_train", type=int, default=None)
    g.add_argument("--num_test", type=int, default=None)
    g.add_argument("--image_size", type=int, default=None)
    g.add_argument("--body", default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--fraction_2d_only", type=float, default=None)
    g.add_argument("--num_views", type=int, default=None)
    g.add_argument("--num_frames", type=int, default=None)
    g.add_argument("--batch_size", type=int, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    """The CLI; errors in the user's input raise (see `imphmr_jax.cli`), run via `cli.run`."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TFDS's absl INFO chatter ("Generating dataset", "Done writing ...") would interleave with
    # the builder's progress bar; its warnings still show.
    logging.getLogger("absl").setLevel(logging.WARNING)
    # Imported after parsing so that --help and argument errors do not wait for TFDS.
    from imphmr_jax import cli
    from imphmr_jax.data import builders

    cls = builders.builder_class(args.dataset)
    is_real = issubclass(cls, builders.RealNpzBuilder)
    allowed, other = ((REAL_OPTIONS, SYNTHETIC_OPTIONS) if is_real
                      else (SYNTHETIC_OPTIONS, REAL_OPTIONS))
    wrong = [f"--{k}" for k in other if getattr(args, k) is not None]
    if wrong:
        raise cli.InputError(f"{', '.join(wrong)} do(es) not apply to dataset {args.dataset!r}")
    options = {k: getattr(args, k) for k in allowed if getattr(args, k) is not None}
    if "splits" in options:
        options["splits"] = [s.strip() for s in options["splits"].split(",") if s.strip()]
    for key in ("image_dir", "mask_dir"):
        if key in options:
            options[key] = cli.expand_path(options[key])
    builder = builders.build(args.dataset, args.data_dir, manual_dir=args.manual_dir,
                             config=args.config, overwrite=args.overwrite,
                             progress=not args.no_progress, **options)
    meta = dict(builder.info.metadata or {})
    print(json.dumps({"dataset": args.dataset, "config": args.config,
                      "path": str(builder.data_dir), **meta}, indent=1))
    return 0


if __name__ == "__main__":
    from imphmr_jax import cli
    cli.run(main)
