"""Hosts of a side network: the stock backbone runs without an autograd graph
and shows each block's sublayer outputs to a trainable network beside it
(E3VA's highway, :mod:`mmpeft.adapters.e3va`).

The mechanism, for one forward: a forward pre-hook on two modules of each
block whose input is the sublayer's output (the attention output, the MLP
output) before drop-path and the residual add (the drop-paths; on
mmpretrain's ViT the layer scales before them) hands that tensor to the side
network; a forward hook on each block tells the host that
the block ended (where it takes outputs and changes resolution). The stock
forward runs unchanged under ``torch.no_grad`` — same ops, same features —
and the side network's own ops run in the caller's grad mode. The hooks live
for one forward only, so copies and pickles of the model carry none.

A host says where its blocks' sublayer outputs are
(:meth:`SideNetworkHost.sublayer_outputs`) and what happens at the end of a
block (:meth:`SideNetworkHost.end_of_block`); the side network's run object
takes ``absorb`` / ``keep`` / ``transform`` (:class:`~mmpeft.adapters.e3va.
HighwayRun`) and the network joins the features (``join``).
"""
from contextlib import contextmanager
from functools import partial
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

from ..adapters.e3va import E3VA_ADAPTER_CFG, E3VAHighway, HighwayRun


class SideNetworkHost:
    """Mix in before a PEFT backbone class: ``forward`` is the stock forward
    without a graph, with ``self.highway`` fed and joined.

    Hosts call :meth:`refuse_host_options` first and :meth:`attach_highway`
    at the end of ``__init__``, and define the two methods below.
    """
    # Host options that have nothing to act on here: the highway spans every
    # block and the backbone keeps no activation for backward.
    refused_host_options = ('adapter_blocks', 'frozen_activations_dtype')

    @classmethod
    def refuse_host_options(cls, kwargs: dict) -> None:
        """Raise on a set :attr:`refused_host_options` argument."""
        given = [k for k in cls.refused_host_options
                 if kwargs.get(k) is not None]
        if given:
            raise ValueError(
                f'{cls.__name__} takes no {", ".join(given)}: its backbone '
                'runs without an autograd graph, so it saves no activation '
                'for backward, and its highway runs beside every block. '
                'Remove the argument (block selection and lower-precision '
                'saves are options of the adapter hosts, e.g. '
                'AdapterSwinTransformer).')

    def attach_highway(self, block_widths: Sequence[int],
                       output_widths: Sequence[int],
                       adapter_cfg: Optional[dict],
                       adapter_cp: bool) -> None:
        """Build ``self.highway`` (an :class:`~mmpeft.adapters.e3va.
        E3VAHighway` with ``adapter_cfg``, default :data:`E3VA_ADAPTER_CFG`)
        and freeze everything else. ``adapter_cfg`` is the checkpoint
        metadata; ``adapter_cp`` recomputes each adapter in backward."""
        self.adapter_cp = adapter_cp
        self.adapter_cfg = dict(adapter_cfg or E3VA_ADAPTER_CFG)
        self.highway = E3VAHighway(block_widths, output_widths,
                                   self.adapter_cfg)
        self.freeze_pretrained()

    def deploy_backbone_cfg(self) -> dict:
        """Nothing merges: the deploy model keeps the highway as trained."""
        return dict(adapter_cfg=dict(self.adapter_cfg))

    def sublayer_outputs(self) -> Iterator[Tuple[nn.Module, nn.Module,
                                                 nn.Module]]:
        """``(block, attn_out, ffn_out)`` for every block in forward order:
        the input of ``attn_out`` / ``ffn_out`` is the attention / MLP
        output of ``block``."""
        raise NotImplementedError

    def end_of_block(self, index: int, block_args: Sequence,
                     run: HighwayRun) -> None:
        """Block ``index`` just ran on ``block_args``: ``run.keep()`` where an
        output is taken, ``run.transform(...)`` where resolution changes."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        run = HighwayRun(self.highway, grad=torch.is_grad_enabled(),
                         recompute=self.adapter_cp)
        with torch.no_grad(), self._tapped(run):
            features = super().forward(x)
        return type(features)(self.highway.join(features, run.outputs))

    @contextmanager
    def _tapped(self, run: HighwayRun):
        handles = []
        try:
            for index, (block, attn_out, ffn_out) in enumerate(
                    self.sublayer_outputs()):
                for sublayer, module in (('attn', attn_out),
                                         ('ffn', ffn_out)):
                    handles.append(module.register_forward_pre_hook(
                        partial(_absorb, run, index, sublayer)))
                handles.append(block.register_forward_hook(
                    partial(self._end_of_block, run, index)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _end_of_block(self, run, index, block, args, output) -> None:
        self.end_of_block(index, args, run)


def _absorb(run: HighwayRun, index: int, sublayer: str, module: nn.Module,
            args: tuple) -> None:
    run.absorb(index, sublayer, args[0])
