"""Foreground attention A: CBAM's spatial gate (Jongchan/attention-module MODELS/cbam.py;
docs/method.md#foreground-attention).

ImpHMR (Sec. 3.3, supplementary 6.1) uses only CBAM's *spatial* attention to keep the
human-related part of the encoder map z and pools it into the latent z_fg = GAP(A(z)) that
conditions the feature field.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from smpl_jax.numerics import safe_div

# CBAM's BatchNorm2d(1, eps=1e-5, momentum=0.01): torch's 0.01 weights the NEW statistic, Flax's
# momentum weights the OLD one.
BN_EPS = 1e-5
BN_MOMENTUM = 0.99
POOLINGS = ("mean", "weighted")


class ForegroundAttention(nn.Module):
    """CBAM spatial gate A and the pooled foreground latent z_fg.

    A = sigmoid(BN(Conv7x7(concat[max_c F, mean_c F])))   (no bias, no ReLU; max FIRST as in CBAM)

    pooling: how z_fg is pooled from the attended map A·F (not given by the paper;
      docs/method.md#open-parameters):
      'mean'      z_fg = mean_{h,w}(A·F)             -- the paper's "GAP(A(z))" (default)
      'weighted'  z_fg = sum_{h,w}(A·F) / sum_{h,w} A -- an attention-normalised average
    dtype: computation dtype; parameters and batch statistics stay float32.

    __call__(features (B, H, W, C), train) -> (attended (B, H, W, C), attention (B, H, W, 1)).
    `pool(attended, attention) -> z_fg (B, C)` applies the configured pooling.
    """

    pooling: str = "mean"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool):
        x = jnp.asarray(features, self.dtype)
        pooled = jnp.concatenate([jnp.max(x, axis=-1, keepdims=True),
                                  jnp.mean(x, axis=-1, keepdims=True)], axis=-1)  # (B, H, W, 2)
        logits = nn.Conv(1, (7, 7), padding=((3, 3), (3, 3)), use_bias=False, dtype=self.dtype,
                         param_dtype=jnp.float32, name="conv")(pooled)
        logits = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                              dtype=self.dtype, param_dtype=jnp.float32, name="bn")(logits)
        attention = nn.sigmoid(logits)
        return x * attention, attention

    def pool(self, attended, attention):
        """(B, H, W, C), (B, H, W, 1) -> z_fg (B, C), reduced in float32 (bfloat16 sums drift)."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"ForegroundAttention pooling must be one of {POOLINGS}, "
                             f"got {self.pooling!r}")
        a = attended.astype(jnp.float32)
        if self.pooling == "mean":
            z = jnp.mean(a, axis=(1, 2))
        else:
            # sigmoid > 0, so the denominator is positive; the floor only guards underflow.
            w = jnp.sum(attention.astype(jnp.float32), axis=(1, 2))
            z = safe_div(jnp.sum(a, axis=(1, 2)), w, 1e-6)
        return z.astype(self.dtype)
