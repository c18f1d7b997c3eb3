"""ImpHMR as in the paper (imphmr_jax.config.paper_config): ResNet-50 at 224², batch 64, Adam
5e-5, SPIN's mixture of H36M / MPII / LSPET / COCO-EFT / MPI-INF-3DHP, evaluated on 3DPW.

Build the real datasets first (docs/datasets.md), e.g.
    python -m imphmr_jax.data.build --dataset h36m --manual_dir /data/spin --data_dir ~/tensorflow_datasets
and point the body at real SMPL files:
    --config.body.model=/path/SMPL_NEUTRAL.pkl --config.body.j_regressor_extra=/path/J_regressor_extra.npy
    --config.body.j_regressor_h36m=/path/J_regressor_h36m.npy
"""
from imphmr_jax.config import paper_config


def get_config():
    return paper_config()
