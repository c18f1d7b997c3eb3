"""Ablation (paper Sec. 4.2, Tab. 4): variant 'imphmr' trained on COCO-EFT only and evaluated on
3DPW (imphmr_jax.config.ablation_config). Pass ':paper' to train on the paper's mixture instead:
    python -m imphmr_jax.train --config configs/imphmr/coco_ablation.py:paper --workdir DIR
"""
from imphmr_jax.config import ablation_config


def get_config(data="coco"):
    return ablation_config("imphmr", data or "coco")
