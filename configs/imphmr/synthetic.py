"""The embedded default job (imphmr_jax.config.synthetic_config): ImpHMR on the synthetic default
dataset, sized to train in minutes on a 2-core CPU. Run it with `python -m imphmr_jax.default_job`
(build, train, evaluate, compare with the mean-pose baseline) or
    python -m imphmr_jax.train --config configs/imphmr/synthetic.py --workdir out/synthetic
"""
from imphmr_jax.config import synthetic_config


def get_config():
    return synthetic_config()
