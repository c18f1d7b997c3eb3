"""GHN rendering network ψ: n reference views' pixel-aligned features -> density σ' and radiance c.

ActorsNeRF form (Mu et al., ICCV 2023; `JitengMu/ActorsNeRF:core/nets/actorsnerf/
rendering_network/rendering_network.py`, pixel features only: the SMPL-vertex sparse-conv features
are dropped, a stated deviation), with k = 1..n the reference views and γ = γ(x_c) the positional
encoding of the canonical point (`imphmr_jax.render.volume.positional_encoding`, include_input,
10 octaves -> 63-d):

    h_k = ReLU(W_px f_k)
    σ branch:   a_k = W_a1 [ReLU(W_a0 h_k); γ]
                σ'  = softplus(W_a [ReLU(W_a3 ReLU(W_a2 ReLU(mean_k a_k)))] + density_bias)
    rgb branch: b_k = W_r2 ReLU(W_r1 [ReLU(W_r0 h_k); γ])
                c   = sigmoid(W_rgb ReLU(W_r3 ReLU(mean_k b_k)))

mean_k is the mean over the views in which the point is valid (inside the reference image and in
front of its camera); a point valid in no view gets a zero fused vector (its outputs are then the
heads' response to zeros, the same for every such point). Fusion by a masked mean makes ψ invariant
to the order of the views and lets n differ between training and use.

Density activation: ActorsNeRF / HumanNeRF use ReLU on the raw density; here softplus with a shift
of density_bias = -1 (mip-NeRF 360's choice, `google-research/multinerf:internal/models.py`,
`density_bias = -1.`): σ' > 0 everywhere with a non-zero gradient, and a raw output near 0 at
initialisation gives σ' ≈ softplus(-1) ≈ 0.31 per unit length (metres), a translucent start that
neither hides nor saturates the volume. `imphmr_jax.render.volume.integrate` takes σ' as it is
(its ReLU is the identity on positive values).
"""
import functools
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from imphmr_jax.render.volume import positional_encoding


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over axis 0 of the entries where `valid`; zero where no entry is valid.

    Args:
      values: (n, P, D).
      valid: (n, P) bool.
    Returns:
      (P, D) in the dtype of values.
    """
    w = valid.astype(values.dtype)[..., None]
    count = jnp.sum(w, axis=0)
    return jnp.sum(w * values, axis=0) / jnp.maximum(count, 1.0)


class RenderingNetwork(nn.Module):
    """ψ (see the module docstring).

    Attributes:
      width: hidden width of every layer (256 in ActorsNeRF).
      pe_octaves: octaves L of γ(x_c) (10: 3 + 2·10·3 = 63 inputs).
      fusion: how views are fused; 'mean' (masked mean over valid views) is the only option.
      density_bias: shift added to the raw density before softplus.
      dtype: computation dtype; parameters float32, σ' and c returned in float32.
    """

    width: int = 256
    pe_octaves: int = 10
    fusion: str = "mean"
    density_bias: float = -1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array, valid: jax.Array,
                 x_c: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """Args:
          feats: (n, P, C) pixel-aligned features f_k of P points in n reference views (zero
            where not valid, as `features.sample_features` returns them).
          valid: (n, P) bool, point visible in view k.
          x_c: (P, 3) canonical points normalised by the caller to the canonical box, [-1, 1]^3.
        Returns:
          sigma: (P,) density σ' > 0, per unit length of the sampling parameter (metres).
          rgb: (P, 3) radiance c in [0, 1].
        """
        if self.fusion != "mean":
            raise ValueError(f"RenderingNetwork.fusion must be 'mean', got {self.fusion!r}")
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
        relu = nn.relu
        feats = jnp.asarray(feats, self.dtype)
        gamma = positional_encoding(jnp.asarray(x_c, self.dtype), self.pe_octaves,
                                    include_input=True)  # (P, 3 + 6L)
        gamma = jnp.broadcast_to(gamma, feats.shape[:1] + gamma.shape)  # (n, P, 3 + 6L)

        h = relu(dense(self.width, name="W_px")(feats))

        a = relu(dense(self.width, name="W_a0")(h))
        a = dense(self.width, name="W_a1")(jnp.concatenate([a, gamma], axis=-1))
        a = relu(masked_mean(a, valid))
        a = relu(dense(self.width, name="W_a2")(a))
        a = relu(dense(self.width, name="W_a3")(a))
        raw_sigma = dense(1, name="W_a")(a)[..., 0]
        sigma = jax.nn.softplus(raw_sigma.astype(jnp.float32) + self.density_bias)

        b = relu(dense(self.width, name="W_r0")(h))
        b = relu(dense(self.width, name="W_r1")(jnp.concatenate([b, gamma], axis=-1)))
        b = dense(self.width, name="W_r2")(b)
        b = relu(masked_mean(b, valid))
        b = relu(dense(self.width, name="W_r3")(b))
        rgb = jax.nn.sigmoid(dense(3, name="W_rgb")(b).astype(jnp.float32))
        return sigma, rgb
