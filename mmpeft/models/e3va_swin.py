"""E3VA on mmdet's Swin Transformer (Yin et al., ACM MM 2023, arXiv
2306.09729): the stock Swin, frozen and run without a graph, with a highway
of low-rank adapters beside it (:mod:`mmpeft.adapters.e3va`).

Per block the highway reads the (shifted-)window attention output and the
MLP output (the inputs of ``attn.drop`` and ``ffn.dropout_layer``, the
block's drop-paths); after each stage it goes through that stage's own
``PatchMerging`` (frozen, shared: the same module the backbone just ran, so
the highway's gradient flows through its linear maps and no weight gets a
gradient); at every output it joins ``norm{i}``'s feature through its own
trainable LayerNorm.
"""
from typing import Optional

from mmengine.registry import MODELS

from .side_network import SideNetworkHost
from .swin import AdapterSwinTransformer


@MODELS.register_module()
class E3VASwinTransformer(SideNetworkHost, AdapterSwinTransformer):
    """mmdet ``SwinTransformer`` + the E3VA highway.

    Args:
        adapter_cfg: the highway's adapter in every slot (two per block); a
            token-wise adapter (it gets no ``hw_shape``). Default: the dual
            low-rank E3VA adapter, m = 64, k = 8.
        adapter_cp: recompute each highway adapter in backward (it keeps its
            input for its weight gradient either way).
        **kwargs: the stock ``SwinTransformer`` arguments (``with_cp`` has
            nothing to recompute: the blocks build no graph).
    """

    def __init__(self,
                 adapter_cfg: Optional[dict] = None,
                 adapter_cp: bool = False,
                 **kwargs):
        self.refuse_host_options(kwargs)
        super().__init__(adapters={}, adapter_cp=adapter_cp, **kwargs)
        # Block index -> stage, for the last block of every stage.
        ends = [len(stage.blocks) for stage in self.stages]
        self._stage_end = {sum(ends[:s + 1]) - 1: s for s in range(len(ends))}
        self.attach_highway(
            [self.block_width(block) for block in self.blocks()],
            [self.num_features[i] for i in sorted(set(self.out_indices))],
            adapter_cfg, adapter_cp)

    def sublayer_outputs(self):
        for block in self.blocks():
            yield block, block.attn.drop, block.ffn.dropout_layer

    def end_of_block(self, index, block_args, run) -> None:
        stage = self._stage_end.get(index)
        if stage is None:
            return
        if stage in self.out_indices:
            run.keep()
        downsample = self.stages[stage].downsample
        if downsample is not None:
            hw_shape = block_args[1]
            run.transform(lambda h: downsample(h, hw_shape)[0])
