"""E3VA on mmpretrain's Vision Transformer (the ``dinov2`` host: DINOv2,
DeiT, EVA archs): the stock backbone, frozen and run without a graph, with
the highway of :mod:`mmpeft.adapters.e3va` beside it.

As on mmseg's ViT (:mod:`.e3va_vit`) there is one resolution and nothing to
downsample. Per layer the highway reads the attention output and the MLP
(or SwiGLU) output *before layer scale*: the inputs of ``attn.gamma1`` and
``ffn.gamma2``, after the sublayer's own dropout. E3VA's adapters read "the
W-MSA and MLP outputs", what the sublayer computes; DINOv2's layer scale,
like drop-path after it, belongs to the residual branch (how much of that
output the backbone's stream takes), and the highway is its own stream with
its own scales (the adapters' up-projections, the join's LayerNorm). The
unscaled output is also what the adapters' init assumes, as for the host's
``series`` placement (:mod:`.pretrain_vit`). Without layer scale (DeiT)
``gamma`` is an identity and both readings coincide.

Tokens: the state covers every token the layers carry (the class token and
DINOv2's registers too); at every ``out_indices`` layer its last H*W tokens,
the patch tokens, join the (B, C, H, W) map the stock backbone returns
(``out_type='featmap'``: the patch tokens after ``final_norm`` at the last
layer) through the highway's own trainable LayerNorm. The other
``out_type``\\ s return no map and are refused.
"""
from typing import Optional

from mmengine.registry import MODELS

from .pretrain_vit import AdapterPretrainViT
from .side_network import SideNetworkHost


@MODELS.register_module()
class E3VAPretrainViT(SideNetworkHost, AdapterPretrainViT):
    """mmpretrain ``VisionTransformer`` + the E3VA highway.

    Args:
        adapter_cfg, adapter_cp: see
            :class:`~mmpeft.models.e3va_swin.E3VASwinTransformer`.
        convert_weights, num_register_tokens, **kwargs: see
            :class:`~mmpeft.models.pretrain_vit.AdapterPretrainViT`
            (``out_type`` must be ``'featmap'``: the highway joins the
            feature maps).
    """

    def __init__(self,
                 adapter_cfg: Optional[dict] = None,
                 adapter_cp: bool = False,
                 **kwargs):
        out_type = kwargs.get('out_type', 'cls_token')
        if out_type != 'featmap':
            raise ValueError(
                f'E3VAPretrainViT joins its highway into the patch-token '
                f"maps; out_type={out_type!r} returns none. Set "
                "out_type='featmap' (or use AdapterPretrainViT).")
        self.refuse_host_options(kwargs)
        super().__init__(adapters={}, adapter_cp=adapter_cp, **kwargs)
        self.attach_highway([self.embed_dims] * len(self.layers),
                            [self.embed_dims] * len(set(self.out_indices)),
                            adapter_cfg, adapter_cp)

    def sublayer_outputs(self):
        for layer in self.layers:
            yield layer, layer.attn.gamma1, layer.ffn.gamma2

    def end_of_block(self, index, block_args, run) -> None:
        if index in self.out_indices:
            run.keep()
