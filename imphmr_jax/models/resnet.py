"""Image encoder g: torchvision-layout ResNet (v1.5) in Flax linen, NHWC
(docs/method.md#image-encoder-g).

Module names equal torchvision's state-dict names ('layer1.0.conv1' -> 'layer1_0/conv1',
'layer1.0.downsample.0' -> 'layer1_0/downsample_conv'), so `imphmr_jax.convert.resnet_from_torch`
maps a torchvision / SPIN state dict 1:1. Every padding is explicit: Flax's 'SAME' pads a stride-2
3x3 window on an even input by (0, 1) where torch pads (1, 1), a one-pixel shift that breaks
parity with converted weights (google/flax#2993).

The output is the feature map BEFORE global pooling, (B, H/32, W/32, 8 * width * expansion):
(B, 7, 7, 2048) for ResNet-50 on 224x224 crops. ImpHMR replaces SPIN's average pool by foreground
attention, so pooling is the caller's business.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 on the NEW value == Flax momentum 0.9 on the old.
BN_EPS = 1e-5
BN_MOMENTUM = 0.9
# torchvision's conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

EXPANSION = {"basic": 1, "bottleneck": 4}


def _pad(k):
    """Symmetric torch-style padding for a k x k conv with torch's padding = k // 2."""
    return ((k // 2, k // 2), (k // 2, k // 2))


def _conv_and_norm(dtype, train):
    """torchvision's conv (no bias, fan-out init) and BatchNorm (eps 1e-5, torch momentum 0.1)."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                             kernel_init=conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                             epsilon=BN_EPS, dtype=dtype, param_dtype=jnp.float32)
    return conv, norm


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, identity or 1x1-conv shortcut."""

    planes: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_and_norm(self.dtype, train)
        s = (self.stride, self.stride)
        y = conv(self.planes, (3, 3), s, padding=_pad(3), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.planes, (3, 3), padding=_pad(3), name="conv2")(y)
        y = norm(name="bn2")(y)
        if self.downsample:
            x = conv(self.planes, (1, 1), s, padding="VALID", name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """ResNet-50 block, v1.5: 1x1 -> 3x3 (stride here, not on the 1x1) -> 1x1 (x4 channels)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_and_norm(self.dtype, train)
        s = (self.stride, self.stride)
        y = conv(self.planes, (1, 1), padding="VALID", name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.planes, (3, 3), s, padding=_pad(3), name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(self.planes * 4, (1, 1), padding="VALID", name="conv3")(y)
        y = norm(name="bn3")(y)
        if self.downsample:
            x = conv(self.planes * 4, (1, 1), s, padding="VALID", name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """torchvision ResNet without avgpool/fc. (B, H, W, 3) -> (B, H/32, W/32, 8*width*expansion).

    stage_sizes: blocks per stage, (3, 4, 6, 3) for ResNet-50, (2, 2, 2, 2) for ResNet-18.
    block: 'bottleneck' (expansion 4) or 'basic' (expansion 1).
    width: stem channels and first-stage planes (64 in torchvision; smaller only for tests).
    dtype: computation dtype; parameters and batch statistics stay float32.

    `return_intermediates=True` returns, instead of the final map, a dict of the maps pixel-aligned
    encoders read (pixelNeRF / ActorsNeRF): 'stem' = conv1 + bn1 + ReLU before the max-pool
    (B, H/2, W/2, width), and 'layer{i}' = the output of stage i (B, H/2^(i+1), W/2^(i+1),
    width * 2^(i-1) * expansion); 'layer{len(stage_sizes)}' is the default output. Sizes are the
    ceilings of those fractions for inputs that are not multiples of 32. The parameters are the same.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block: str = "bottleneck"
    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, return_intermediates: bool = False):
        if self.block not in EXPANSION:
            raise ValueError(f"ResNet block must be 'basic' or 'bottleneck', got {self.block!r}")
        block_cls = Bottleneck if self.block == "bottleneck" else BasicBlock
        expansion = EXPANSION[self.block]
        conv, norm = _conv_and_norm(self.dtype, train)
        x = jnp.asarray(x, self.dtype)
        x = conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        intermediates = {"stem": x}
        # nn.max_pool pads with -inf, like torch's MaxPool2d(3, 2, padding=1).
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        in_ch = self.width
        for i, n_blocks in enumerate(self.stage_sizes):
            planes = self.width * 2**i
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                down = j == 0 and (stride != 1 or in_ch != planes * expansion)
                x = block_cls(planes, stride, down, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
                in_ch = planes * expansion
            intermediates[f"layer{i + 1}"] = x
        return intermediates if return_intermediates else x


def resnet50(**kw) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", **kw)


def resnet18(**kw) -> ResNet:
    return ResNet(stage_sizes=(2, 2, 2, 2), block="basic", **kw)


def resnet34(**kw) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), block="basic", **kw)
