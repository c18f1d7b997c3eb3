"""Helpers of tests/test_optimize.py, and its worker process: refine the tiny clip for a few steps
with its frames sharded over NUM_DEVICES fake CPU devices and save the result (the test compares
it with one device's).

    python tests/optimize_worker.py INPUT.pkl OUT.npz NUM_DEVICES

INPUT.pkl (written by the test): the clip (images, masks, K), the init, the prepared cues and the
tiny GHN's variables, so the worker neither generates people, initialises the GHN nor prepares.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_ghn():
    """The tiny GHN whose W is the posed body's silhouette without training (as
    tests/test_ghn.py::test_render_and_compare_loss_is_lowest_at_the_true_pose): the body's
    skinning weights, the rest-surface occupancy and a saturated density."""
    sys.path.insert(0, HERE)
    from ghn_fixtures import tiny_config
    from neuhmr_jax.ghn.rendering_network import RenderingNetwork
    from neuhmr_jax.train_ghn import build_ghn
    config = tiny_config()
    config.ghn.volume_resolution = 32
    config.ghn.volume_widths = (8, 8, 8, 8)
    config.ghn.occupancy = "surface"
    config.ghn.num_samples = 24
    ghn = build_ghn(config)
    ghn.psi = RenderingNetwork(width=config.ghn.psi_width, pe_octaves=config.ghn.pe_octaves,
                               density_bias=30.0)
    return ghn


def tiny_optimize_config(**optim):
    """optimize_config at test size: 8-wide field, 3 anchors of a 12-frame clip, few rays."""
    from neuhmr_jax.config import optimize_config
    c = optimize_config()
    c.anchors.every = 3
    c.anchors.num_anchors = 3
    c.motion_field.hidden = 8
    c.motion_field.depth = 2
    c.motion_field.fourier_octaves = 2
    o = c.optim
    o.steps = 0
    o.batch_frames = 4
    o.rays_per_frame = 64
    o.dilation = 2
    o.silhouette_dilation = 1
    o.eval_batch = 8
    o.progress = False
    c.matching.num_candidates = 16
    c.matching.depth_stride = 1
    for k, v in optim.items():
        setattr(o, k, v)
    return c


def refine_config(**optim):
    """The refinement tests' config: 8 frames per step; the silhouette term leads (the untrained
    ψ's colours carry no pose information)."""
    c = tiny_optimize_config(**{"batch_frames": 8, "learning_rate": 0.003, **optim})
    c.loss.rgb = 0.1
    c.loss.occupancy = 1.0
    return c


def main():
    in_path, out_path, num_devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={num_devices}")
    import pickle

    import jax
    import numpy as np
    from imphmr_jax.training import sharding
    from neuhmr_jax import optimize
    assert jax.device_count() == num_devices
    with open(in_path, "rb") as f:
        data = pickle.load(f)
    ghn = tiny_ghn()
    video = optimize.Video(data["images"], data["K"], data["masks"])
    res = optimize.refine(ghn, data["variables"], video, data["init"],
                          refine_config(steps=data["steps"]), mesh=sharding.make_mesh(),
                          prepared=optimize.Prepared(**data["prepared"]), progress=False)
    np.savez(out_path, poses=res.poses, transl=res.transl, loss=res.history["loss"])
    print("done")


if __name__ == "__main__":
    main()
