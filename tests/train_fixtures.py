"""A tiny training config and in-memory synthetic data shared by the training tests and
tests/train_worker.py (imported by both; not a test module)."""
import functools

from imphmr_jax.config import synthetic_config


def tiny_config(num_steps=3, **train_overrides):
    c = synthetic_config()
    m = c.model
    m.backbone_width = 8
    m.feature_size = 64
    m.field_hidden = 32
    m.map_size = 1
    m.num_samples = 4
    m.regressor_hidden = 64
    m.decoder_channels = (16, 8, 8, 8, 1)
    d = c.data
    d.img_res = 32
    d.num_threads = 1
    d.synthetic.num_train = 16
    d.synthetic.num_test = 8
    d.synthetic.image_size = 64
    t = c.train
    t.batch_size = 8
    t.num_steps = num_steps
    t.learning_rate = 1e-3
    t.schedule = "constant"
    t.warmup_steps = 0
    t.log_every = 1
    t.eval_every = 0
    t.checkpoint_every = 2
    t.progress = False
    for k, v in train_overrides.items():
        setattr(t, k, v)
    c.eval.batch_size = 8
    c.eval.max_figures = 1
    return c


@functools.lru_cache(maxsize=None)
def tiny_sources(num_train=16, num_test=8):
    """(train, test) lists of synthetic records (64² images, the small default body)."""
    from imphmr_jax.data import synthetic
    cfg = synthetic.SyntheticConfig(image_size=64, body="default-small", seed=0)
    train = list(synthetic.generate(cfg, "train", num_train, batch_size=16, progress=False))
    test = list(synthetic.generate(cfg, "test", num_test, batch_size=16, progress=False))
    return train, test
