"""A simple feature pyramid on a plain ViT, for mmdetection (ViTDet recipe).

A plain ViT has one feature map, at the stride of its patch size. ViTDet
(Li et al., ECCV 2022) builds the pyramid a detector needs from that single
map alone: transposed convolutions for the finer levels, the map itself, and
max pooling for the coarser ones; then a 1x1 lateral and a 3x3 output
convolution per level, both followed by a channel LayerNorm, and no top-down
or lateral mixing between levels.

mmdetection 3.x ships neither module (its ViTDet lives in ``projects/``, not
in the wheel), so both are here, registered in mmdet's ``MODELS``:

- ``LN2d``: ``norm_cfg=dict(type='LN2d')`` then works wherever mmcv's
  ``build_norm_layer`` is called in mmdet's scope (``ConvModule``, the RoI
  heads' convolutions, ...).
- ``SimpleFPN``: the neck.

This module imports mmdet; ``import mixedae_mm`` does not import it (only
``mixedae_mm.downstream.mmdet`` does).
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


class LN2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map.

    Every spatial position is normalised on its own over its ``C`` values,
    then scaled and shifted per channel: ``nn.LayerNorm(C)`` applied to the
    ``(B, H, W, C)`` view. (``nn.GroupNorm(1, C)`` would instead normalise
    over ``C x H x W`` together.)

    Args:
        num_channels (int): ``C``.
        eps (float): Added to the variance. mmcv's ``build_norm_layer``
            passes ``eps=1e-5`` unless the config states one; ViTDet uses
            1e-6.
        affine (bool): Learn the per-channel scale and shift.
    """

    #: ConvModule names its norm attribute after this (``ConvModule.ln``)
    _abbr_ = 'ln'

    def __init__(self, num_channels: int, eps: float = 1e-6,
                 affine: bool = True) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter('weight', None)
            self.register_parameter('bias', None)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f'LN2d({self.num_channels}) expects (B, '
                             f'{self.num_channels}, H, W), got '
                             f'{tuple(x.shape)}')
        # channels last, the fused layer_norm over C, channels first again
        # (under autocast F.layer_norm computes in fp32)
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.num_channels, ), self.weight,
            self.bias, self.eps)
        # contiguous NCHW: mmcv's RoIAlign (CPU and CUDA) reads the raw
        # buffer as NCHW, so a channels-last view gave Mask R-CNN's heads
        # scrambled RoI features (open-mmlab/mmcv#2203)
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (f'{self.num_channels}, eps={self.eps}, '
                f'affine={self.weight is not None}')


def _resample(in_channels: int, scale: float,
              norm_cfg: Optional[dict]) -> Tuple[nn.Module, int]:
    """The branch that takes the ViT map to ``scale`` times its resolution.

    ``scale = 2**k``: ``k`` stride-2 transposed convolutions, each halving
    the channels, with norm + GELU between two of them (ViTDet's 4x branch:
    ``ConvT(D, D/2) - LN - GELU - ConvT(D/2, D/4)``). ``scale = 1``: the map
    itself. ``scale = 1/2**k``: ``2**k x 2**k`` max pooling, ``D`` channels.

    Returns the branch and its output channels.
    """
    steps = math.log2(scale)
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f'scale factors must be powers of 2, got {scale}')
    steps = round(steps)
    if steps == 0:
        return nn.Identity(), in_channels
    if steps < 0:
        kernel = 2**(-steps)
        return nn.MaxPool2d(kernel_size=kernel, stride=kernel), in_channels
    layers: List[nn.Module] = []
    channels = in_channels
    for i in range(steps):
        if channels % 2:
            raise ValueError(f'{channels} channels cannot be halved for an '
                             f'upsampling scale of {scale}')
        if i > 0:
            if norm_cfg is not None:
                layers.append(build_norm_layer(norm_cfg, channels)[1])
            layers.append(nn.GELU())
        layers.append(
            nn.ConvTranspose2d(channels, channels // 2, kernel_size=2,
                               stride=2))
        channels //= 2
    return nn.Sequential(*layers), channels


class SimpleFPN(BaseModule):
    """ViTDet's simple feature pyramid from one ViT feature map.

    With a patch-16 ViT (input ``(B, D, H/16, W/16)``) and the default
    ``scale_factors=(4, 2, 1, 0.5)``, the levels are::

        P2, stride 4:   ConvT(D, D/2) - norm - GELU - ConvT(D/2, D/4)
        P3, stride 8:   ConvT(D, D/2)
        P4, stride 16:  the map itself (D channels)
        P5, stride 32:  2x2 max pooling (D channels)
        each then:      1x1 conv to C - norm, 3x3 conv C - norm
        P6, stride 64:  P5 max-pooled with kernel 1, stride 2 (extra level)

    giving ``(B, C, H/s, W/s)`` for ``s = 4, 8, 16, 32, 64``, with
    ``D = in_channels`` and ``C = out_channels``. ConvT is a 2x2,
    stride-2 transposed convolution; the 1x1 and 3x3 convolutions have no
    bias and no activation (ViTDet). Odd map sizes: the pooled levels round
    down, the extra level rounds up; inputs padded to a multiple of 64
    pixels (the configs pad to 1024) have none.

    Args:
        in_channels (int): ``D``, channels of the ViT feature map.
        out_channels (int): ``C``, channels of every output level.
        scale_factors (Sequence[float]): Resolution of each level relative
            to the ViT map, powers of 2, finest first. With a patch size
            other than 16, pick them so that the strides still are
            ``4, 8, 16, 32`` (patch 8: ``(2, 1, 0.5, 0.25)``).
        num_outs (int): Number of outputs; levels beyond
            ``len(scale_factors)`` are max-pooled (1x1, stride 2) from the
            last one (RPN strides ``[4, 8, 16, 32, 64]`` need 5).
        norm_cfg (dict, optional): Norm after the lateral/output convs and
            inside the upsampling branches. ``dict(type='LN2d')`` as ViTDet.
        act_cfg (dict, optional): Activation after those convs (ViTDet:
            none).
        in_index (int): Which backbone output to use when the backbone
            returns several (default: the last).
        init_cfg: Default: Xavier-uniform for the ``Conv2d`` layers (like
            mmdet's FPN); transposed convolutions keep PyTorch's default.

    Forward:
        ``inputs``: a ``(B, D, h, w)`` tensor, or a sequence of them (what
        mmdet backbones return; ``inputs[in_index]`` is used).
        Returns a tuple of ``num_outs`` tensors ``(B, C, h_i, w_i)``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_cfg: Optional[dict] = dict(type='LN2d', eps=1e-6),
                 act_cfg: Optional[dict] = None,
                 in_index: int = -1,
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='Xavier', layer='Conv2d',
                     distribution='uniform')) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            raise TypeError('SimpleFPN.in_channels is the channels of the '
                            f'one ViT feature map (an int), got {in_channels}')
        scale_factors = tuple(float(s) for s in scale_factors)
        if list(scale_factors) != sorted(scale_factors, reverse=True):
            raise ValueError('scale_factors must go from fine to coarse, got '
                             f'{scale_factors}')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs ({num_outs}) < number of scale '
                             f'factors ({len(scale_factors)})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = scale_factors
        self.num_outs = num_outs
        self.in_index = in_index

        self.resamplers = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for scale in scale_factors:
            branch, channels = _resample(in_channels, scale, norm_cfg)
            self.resamplers.append(branch)
            self.lateral_convs.append(
                ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg,
                           act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(
                ConvModule(out_channels, out_channels, 3, padding=1,
                           norm_cfg=norm_cfg, act_cfg=act_cfg,
                           inplace=False))

    def forward(self, inputs: Union[Tensor, Sequence[Tensor]]
                ) -> Tuple[Tensor, ...]:
        x = inputs if isinstance(inputs, Tensor) else inputs[self.in_index]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'SimpleFPN expects a (B, {self.in_channels}, h, w) map '
                f'(backbone out_type="featmap"), got {tuple(x.shape)}')
        outs = [
            fpn_conv(lateral(resample(x)))
            for resample, lateral, fpn_conv in zip(
                self.resamplers, self.lateral_convs, self.fpn_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)


MODELS.register_module(name='LN2d', module=LN2d)
MODELS.register_module(name='SimpleFPN', module=SimpleFPN)
