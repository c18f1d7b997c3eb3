"""Geometric guidance branch D: rendered feature map f_φ -> silhouette S_φ (ImpHMR Sec. 3.3).

The paper fixes five transposed convolutions with BN and ReLU and a 128x128 output from the 4x4
map (paper, supplementary 6.1); kernel 4 / stride 2 / torch padding 1 (each layer doubles the
resolution) and the channel widths are the project's reading [INF]
(docs/method.md#geometric-guidance-d). Training only.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torch BatchNorm2d defaults (momentum 0.1 on the new value == Flax 0.9 on the old).
BN_EPS = 1e-5
BN_MOMENTUM = 0.9
# torch ConvTranspose2d(k=4, s=2, padding=1) doubles the size; in Flax's (non-transposed-kernel)
# formulation that is a padding of k - 1 - p = 2 on each side of the dilated input. Flax's 'SAME'
# also doubles, but places the window one pixel differently from torch.
_PAD = ((2, 2), (2, 2))


class SilhouetteDecoder(nn.Module):
    """D: (B, h, w, M_f) -> silhouette LOGITS (B, 32 h, 32 w); the sigmoid belongs to the loss.

    channels: output channels of the five transposed convolutions; BN + ReLU follow all but the
      last (which has a bias and gives one logit per pixel). The first four have no bias (BN follows).
    dtype: computation dtype; parameters and batch statistics stay float32.
    """

    channels: Sequence[int] = (256, 128, 64, 32, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_map, train: bool):
        x = jnp.asarray(feature_map, self.dtype)
        last = len(self.channels) - 1
        for i, ch in enumerate(self.channels):
            x = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding=_PAD, use_bias=(i == last),
                                 dtype=self.dtype, param_dtype=jnp.float32, name=f"deconv{i + 1}")(x)
            if i < last:
                x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                                 dtype=self.dtype, param_dtype=jnp.float32, name=f"bn{i + 1}")(x)
                x = nn.relu(x)
        return x[..., 0]
