"""Neural feature field h (ImpHMR eq. 2-3): GIRAFFE's object feature field conditioned on z_fg.

docs/method.md#feature-field-h; autonomousvision/giraffe im2scene/giraffe/models/decoder.py
`Decoder`. Layer names follow GIRAFFE's state dict ('blocks.3' -> 'blocks_3', 'fc_z_skips.0' ->
'fc_z_skips_0') so converted weights map 1:1. ImpHMR conditions h on one latent (paper,
supplementary 6.1), so GIRAFFE's shape and appearance codes are both z_fg: z_shape = z_app = z.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from imphmr_jax.models.regressor import torch_linear_bias_init, torch_linear_kernel_init
from imphmr_jax.render.volume import positional_encoding


class FeatureField(nn.Module):
    """h: (γ(x), γ(r), z_fg) -> (σ, f) at every sample point.

    Fields (GIRAFFE defaults except the sizes ImpHMR fixes):
      hidden: width H of the MLP (128; the paper does not give it).
      n_blocks: fc_in plus n_blocks - 1 hidden H->H layers (8).
      skips: 1-based hidden-layer indices after which z and γ(x) are ADDED again ((4,): after
        blocks_3). GIRAFFE never applies a skip after the last block.
      point_octaves, dir_octaves: L_x = 10, L_r = 4 (eq. 1).
      downscale: points and unit directions are divided by this before γ (GIRAFFE's
        downscale_p_by = 2), so points in [-2, 2] span one period of octave 0.
      feature_size: M_f, the channels of f (2048 in the paper).
      noise_std: std of the N(0, 1) noise added to σ in training (GIRAFFE adds it before the
        renderer's ReLU); drawn from the 'density_noise' rng. 0 disables it.
      sigma_bias_init: added to sigma_out's initial bias (0 = GIRAFFE's init). With 0 the initial
        density can be <= 0 at every point for some seeds, so the rendered map starts all zero and
        only the training-time density noise lets gradients through; 1.0 starts with σ > 0.
      dtype: computation dtype of the dense layers; parameters stay float32. γ is always computed in
        float32 (sin(2^9 π x) is meaningless in bfloat16).

    __call__(points (B, N, 3), viewdirs (B, N, 3), z (B, Z), train)
      -> sigma (B, N) raw density (before ReLU), features (B, N, M_f), both in `dtype`.
    viewdirs need not be normalised (GIRAFFE normalises them here).
    """

    hidden: int = 128
    n_blocks: int = 8
    skips: Sequence[int] = (4,)
    point_octaves: int = 10
    dir_octaves: int = 4
    downscale: float = 2.0
    feature_size: int = 2048
    noise_std: float = 1.0
    dtype: Any = jnp.float32
    sigma_bias_init: float = 0.0

    def _dense(self, features, fan_in, name, bias_offset=0.0):
        # torch.nn.Linear init (U(±1/sqrt(fan_in)) for kernel and bias), for parity with GIRAFFE.
        bias_init = torch_linear_bias_init(fan_in)
        if bias_offset:
            base_init = bias_init
            bias_init = lambda key, shape, dtype=jnp.float32: base_init(key, shape, dtype) + bias_offset
        return nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=torch_linear_kernel_init, bias_init=bias_init, name=name)

    @nn.compact
    def __call__(self, points, viewdirs, z, train: bool):
        h, zdim = self.hidden, z.shape[-1]
        points = jnp.asarray(points, jnp.float32)
        viewdirs = jnp.asarray(viewdirs, jnp.float32)
        p = positional_encoding(points / self.downscale, self.point_octaves)  # (B, N, 6 L_x)
        viewdirs = viewdirs / jnp.linalg.norm(viewdirs, axis=-1, keepdims=True)
        r = positional_encoding(viewdirs / self.downscale, self.dir_octaves)  # (B, N, 6 L_r)
        pdim, rdim = p.shape[-1], r.shape[-1]
        z = jnp.asarray(z, self.dtype)[:, None, :]  # broadcast over the N points of each sample

        net = self._dense(h, pdim, "fc_in")(p) + self._dense(h, zdim, "fc_z")(z)
        net = nn.relu(net)
        num_hidden = self.n_blocks - 1
        skip_idx = 0
        for idx in range(num_hidden):
            net = nn.relu(self._dense(h, h, f"blocks_{idx}")(net))
            if (idx + 1) in self.skips and idx < num_hidden - 1:
                net = net + self._dense(h, zdim, f"fc_z_skips_{skip_idx}")(z)
                net = net + self._dense(h, pdim, f"fc_p_skips_{skip_idx}")(p)
                skip_idx += 1
        sigma = self._dense(1, h, "sigma_out", self.sigma_bias_init)(net)[..., 0]

        net = self._dense(h, h, "feat_view")(net)
        net = net + self._dense(h, zdim, "fc_z_view")(z)
        net = net + self._dense(h, rdim, "fc_view")(r)
        features = self._dense(self.feature_size, h, "feat_out")(nn.relu(net))

        if train and self.noise_std > 0:
            # GIRAFFE's volume_render_image: sigma += randn during training, before the ReLU.
            noise = jax.random.normal(self.make_rng("density_noise"), sigma.shape, jnp.float32)
            sigma = (sigma.astype(jnp.float32) + self.noise_std * noise).astype(sigma.dtype)
        return sigma, features
