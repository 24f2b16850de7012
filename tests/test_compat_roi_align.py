"""mmcv's RoIAlign / RoIAlignRotated read channels-last maps right once
mmpeft is imported (mmpeft/compat.py): what a detector's FPN gives for a ViT
whose output is the permuted token map (mmpretrain's VisionTransformer)."""
import pytest
import torch
from mmcv.ops import RoIAlign, RoIAlignRotated

import mmpeft  # noqa: F401  applies the workaround


@pytest.mark.parametrize('op,rois', [
    (RoIAlign((7, 7), spatial_scale=0.5, sampling_ratio=0, aligned=True),
     torch.tensor([[0, 2.0, 4.0, 20.0, 24.0], [1, 0.0, 0.0, 31.0, 15.0]])),
    (RoIAlignRotated((7, 7), spatial_scale=0.5, sampling_ratio=2,
                     aligned=True),
     torch.tensor([[0, 16.0, 16.0, 12.0, 8.0, 0.3],
                   [1, 10.0, 12.0, 8.0, 8.0, -0.5]])),
], ids=['RoIAlign', 'RoIAlignRotated'])
def test_channels_last_map_gives_the_contiguous_result(op, rois):
    torch.manual_seed(0)
    tokens = torch.randn(2, 16, 16, 8)  # (B, H, W, C), as a ViT returns it
    permuted = tokens.permute(0, 3, 1, 2).requires_grad_()  # channels-last
    assert permuted.is_contiguous(memory_format=torch.channels_last)
    plain = permuted.detach().contiguous().requires_grad_()
    out, ref = op(permuted, rois), op(plain, rois)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    weight = torch.randn_like(ref)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(permuted.grad, plain.grad, rtol=0, atol=0)
