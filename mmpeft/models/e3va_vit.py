"""E3VA on mmseg's Vision Transformer: the stock ViT, frozen and run without
a graph, with the highway of :mod:`mmpeft.adapters.e3va` beside it.

The paper builds E3VA on Swin (its Fig. 2); a plain ViT has one resolution,
so the highway has no downsampling: per layer it reads the attention output
and the MLP output (the inputs of ``attn.dropout_layer`` and
``ffn.dropout_layer``, the layer's drop-paths; class token included) and at
every ``out_indices`` layer joins the map the neck reads (after
``final_norm`` at the last layer, as the stock output) through its own
trainable LayerNorm.
"""
from typing import Optional

from mmengine.registry import MODELS

from .side_network import SideNetworkHost
from .vit import AdapterVisionTransformer


@MODELS.register_module()
class E3VAViT(SideNetworkHost, AdapterVisionTransformer):
    """mmseg ``VisionTransformer`` + the E3VA highway.

    Args:
        adapter_cfg, adapter_cp: see
            :class:`~mmpeft.models.e3va_swin.E3VASwinTransformer`.
        convert_weights, **kwargs: see :class:`AdapterVisionTransformer`
            (``output_cls_token`` is not supported: the highway joins the
            feature maps).
    """

    def __init__(self,
                 adapter_cfg: Optional[dict] = None,
                 adapter_cp: bool = False,
                 **kwargs):
        if kwargs.get('output_cls_token'):
            raise ValueError(
                'E3VAViT joins its highway into the feature maps and returns '
                'no class token; set output_cls_token=False (or use '
                'AdapterVisionTransformer).')
        self.refuse_host_options(kwargs)
        super().__init__(adapters={}, adapter_cp=adapter_cp, **kwargs)
        width = self.block_width(self.layers[0])
        self.attach_highway([width] * len(self.layers),
                            [width] * len(set(self.out_indices)), adapter_cfg,
                            adapter_cp)

    def sublayer_outputs(self):
        for layer in self.layers:
            yield layer, layer.attn.dropout_layer, layer.ffn.dropout_layer

    def end_of_block(self, index, block_args, run) -> None:
        if index in self.out_indices:
            run.keep()
