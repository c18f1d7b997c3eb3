"""Flax linen modules of ImpHMR: ResNet encoder, foreground attention, feature field, regressor, silhouette decoder."""
from imphmr_jax.models.attention import ForegroundAttention
from imphmr_jax.models.feature_field import FeatureField
from imphmr_jax.models.imphmr import (BackboneConfig, ImpHMR, PTNVolumeGenerator,
                                      perspective_max_projection, render_views,
                                      trilinear_sample)
from imphmr_jax.models.silhouette_decoder import SilhouetteDecoder
