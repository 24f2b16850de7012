"""Necks that let a plain (single-scale) ViT feed detectors built for
hierarchical backbones."""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, as in ViTDet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid (Li et al., ECCV 2022), channels kept.

    Rescales a plain ViT's stride-16 map by each factor in ``scale_factors``:
    an up-scale by 2**k is k stride-2 transposed convs (LayerNorm + GELU
    between them), 1 is the identity, a down-scale by 2**k a 2**k max-pool.
    Every output keeps ``in_channels``, so a stock FPN follows and adds the
    lateral / output convs and the extra levels::

        neck=[dict(type='SimpleFeaturePyramid', in_channels=768),
              dict(type='FPN', in_channels=[768] * 4, out_channels=256,
                   num_outs=5)]

    (mmengine builds a list of module configs as a ``Sequential``.)

    Args:
        in_channels: width of the ViT map(s).
        scale_factors: powers of two, one output per factor, in this order.
            The default turns stride 16 into strides 4, 8, 16, 32.
        in_stride: the stride of the input maps. Where it is not a power
            of two (a patch-14 ViT: DINOv2, EVA-02), each map is first
            resized (bilinear) to the next power-of-two stride s (14 -> 16,
            7 -> 8): ``floor(h * in_stride / s)`` rows and columns, exactly
            H / s for an image padded to a multiple of s (the detectors pad
            to 32), so that the outputs have the strides the detector's
            anchors and RoI extractors assume; ``scale_factors`` then apply
            to stride s.
        init_cfg: mmengine init config.

    The input is the backbone's tuple of maps: either one map (ViTDet: the
    last layer) that feeds every level, or one map per scale factor (e.g.
    ``out_indices=(2, 5, 8, 11)``), level i rescaling map i.
    """

    def __init__(self,
                 in_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 in_stride: int = 16,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.in_stride = in_stride
        self.stride = 2**math.ceil(math.log2(in_stride))  # after resizing
        self.scale_factors = tuple(scale_factors)
        self.rescales = nn.ModuleList(
            self._rescale(in_channels, s) for s in self.scale_factors)

    @staticmethod
    def _rescale(channels: int, scale: float) -> nn.Module:
        steps = math.log2(scale) if scale > 0 else math.nan
        if not steps.is_integer():
            raise ValueError(
                f'SimpleFeaturePyramid scale factor {scale} is not a power of '
                'two; use factors such as 4, 2, 1, 0.5.')
        steps = int(steps)
        if steps == 0:
            return nn.Identity()
        if steps < 0:
            return nn.MaxPool2d(kernel_size=2**-steps, stride=2**-steps)
        layers = []
        for i in range(steps):
            if i:
                layers += [LayerNorm2d(channels, eps=1e-6), nn.GELU()]
            layers.append(
                nn.ConvTranspose2d(channels, channels, kernel_size=2,
                                   stride=2))
        return nn.Sequential(*layers)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs, )
        if len(inputs) not in (1, len(self.scale_factors)):
            raise ValueError(
                f'SimpleFeaturePyramid got {len(inputs)} maps; it takes one '
                f'map, or one per scale factor ({len(self.scale_factors)}). '
                "Set the backbone's out_indices accordingly, e.g. (11, ) "
                'for the last layer of a ViT-B.')
        for x in inputs:
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f'SimpleFeaturePyramid(in_channels={self.in_channels}) '
                    f'got a map of shape {tuple(x.shape)}; it needs (N, '
                    f'{self.in_channels}, H, W). Set in_channels to the '
                    "backbone's embed_dims.")
        if self.in_stride != self.stride:
            inputs = [self._to_power_of_two_stride(x) for x in inputs]
        if len(inputs) == 1:
            inputs = tuple(inputs) * len(self.scale_factors)
        return tuple(rescale(x) for rescale, x in zip(self.rescales, inputs))

    def _to_power_of_two_stride(self, x: torch.Tensor) -> torch.Tensor:
        size = [n * self.in_stride // self.stride for n in x.shape[-2:]]
        return F.interpolate(x, size=size, mode='bilinear',
                             align_corners=False)
