"""Φ^GHN on ZJU-MoCap (your own copy; see docs/datasets.md for the folder layout), with
ActorsNeRF's category-level subject split: train on 313, 315, 377, 386, 390, 392, 396; hold out
387, 393, 394. The SMPL fits of ZJU-MoCap need the real SMPL body model (licensed, not shipped):

    python -m neuhmr_jax.train_ghn --config configs/neuhmr/ghn_zju.py --workdir out/ghn_zju \
        --config.data.builder_options.root=/data/zju_mocap \
        --config.body.model=/models/smpl/SMPL_NEUTRAL.pkl \
        --config.data.builder_options.body=/models/smpl/SMPL_NEUTRAL.pkl

Images are halved as in HumanNeRF (512×512); sizes are the full GHN of neuhmr_jax.config.ghn_config
(docs/neuhmr.md).
"""
import ml_collections

from neuhmr_jax.config import ghn_config


def get_config():
    c = ghn_config()
    c.name = "ghn_zju"
    c.body.model = "~/smpl/SMPL_NEUTRAL.pkl"
    d = c.data
    d.name = "zju_mocap"
    d.builder_config = ""
    d.image_size = 512
    d.builder_options = ml_collections.ConfigDict({
        "root": "~/data/zju_mocap", "body": "~/smpl/SMPL_NEUTRAL.pkl",
        "train_subjects": ("313", "315", "377", "386", "390", "392", "396"),
        "test_subjects": ("387", "393", "394"), "frame_stride": 1, "image_scale": 0.5})
    d.lazy_images = True              # ~225k images at stride 1: decode per batch, not up front
    d.same_camera = True              # ActorsNeRF draws references from the target's camera
    d.rays_per_image = 1024
    c.train.batch_size = 4
    c.train.num_steps = 200_000       # ActorsNeRF's checkpoint iter_200000
    return c
