"""Flax linen modules of ImpHMR: ResNet encoder, foreground attention, feature field, AGG, regressor,
silhouette decoder, and Baseline-PTN's volume decoder."""
from imphmr_jax.models.aggregation import AGG
from imphmr_jax.models.attention import ForegroundAttention
from imphmr_jax.models.feature_field import FeatureField
from imphmr_jax.models.imphmr import BackboneConfig, ImpHMR, volume_render_views
from imphmr_jax.models.ptn import PTNVolumeGenerator, perspective_max_projection, trilinear_sample
from imphmr_jax.models.silhouette_decoder import SilhouetteDecoder
