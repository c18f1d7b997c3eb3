"""AGG, ImpHMR's aggregation of a rendered feature map into one feature vector per view (Sec. 3.3,
Fig. 2: f_φ --AGG--> z_φ --R--> Θ_φ).

The paper names the step but not its form; our reading: one depthwise map_size x map_size
convolution over the m x m map f_φ, i.e. a learned per-channel weighted sum of the pixels (plus a
bias), which keeps where on the map a feature was rendered, unlike global average pooling.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imphmr_jax.models.regressor import torch_linear_bias_init, torch_linear_kernel_init


class AGG(nn.Module):
    """f_φ (N, m, m, M_f) -> z_φ (N, M_f): depthwise m x m convolution, VALID padding.

    Fields: map_size m, feature_size M_f, dtype (computation; parameters stay float32).
    Parameters: kernel (m, m, 1, M_f) and bias (M_f,), directly under the module's own name (the
    convolution shares AGG's scope), so ImpHMR's tree holds agg/kernel and agg/bias.
    Initialised as torch.nn.Linear over the m·m pixels (U(±1/m)).
    """

    map_size: int
    feature_size: int
    dtype: Any = jnp.float32

    def setup(self):
        m = self.map_size
        self.conv = nn.Conv(self.feature_size, (m, m), padding="VALID",
                            feature_group_count=self.feature_size, dtype=self.dtype,
                            param_dtype=jnp.float32, kernel_init=torch_linear_kernel_init,
                            bias_init=torch_linear_bias_init(m * m))
        # No extra level in the parameter tree: converted weights and checkpoints keep loading.
        nn.share_scope(self, self.conv)

    def __call__(self, feature_map):
        return self.conv(feature_map).reshape(feature_map.shape[0], self.feature_size)
