"""Official DINOv2, EVA-02 and SAM releases -> mmpretrain backbone keys.

Each converter reads the state dict of an official release and returns the
bare backbone state dict of mmpretrain 1.2.0's ``VisionTransformer`` (DINOv2;
timm / DeiT ViTs have the same layout without layer scale), ``ViTEVA02`` or
``ViTSAM``: what the stock backbones and the mmpeft hosts load, the hosts also
straight from the official file with ``convert_weights=True``. Pure torch, so
``tools/convert_pretrain_vit.py`` runs without mmpretrain.

Where the official files come from (the preflight message of the configs
names the same commands):

- DINOv2 (facebookresearch/dinov2, README "Pretrained models"):
  ``https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth``
  (``vits14`` / ``vitl14`` / ``vitg14``; ``_reg4`` files add four register
  tokens).
- EVA-02 (baaivision/EVA, ``EVA-02/asuka``: the MIM-pretrained weights on
  huggingface.co/Yuxin-CV/EVA-02), e.g. ``eva02_B_pt_in21k_p14.pt``.
- SAM (facebookresearch/segment-anything, README "Model Checkpoints"):
  ``https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth``;
  only the ``image_encoder.*`` part is kept.
"""
import math
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

StateDict = 'OrderedDict[str, torch.Tensor]'


class ConversionError(ValueError):
    """The file is not the official release the converter reads."""


def unwrap_official(checkpoint: Mapping) -> Mapping:
    """The weights of a checkpoint file: EVA-02 stores them under ``module``
    (DeepSpeed) or ``model``, others under ``state_dict``; DINOv2 and SAM
    files are bare state dicts."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _rename(key: str, rules: Sequence[Tuple[str, str]]) -> Optional[str]:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return None


# ``blocks.N.`` (or DINOv2's FSDP-chunked ``blocks.C.N.``) -> ``layers.N.``.
_BLOCK = re.compile(r'blocks\.(\d+)\.(?:(\d+)\.)?(.*)')


def _convert(state_dict: Mapping[str, torch.Tensor], source: str,
             top: Sequence[Tuple[str, str]], block: Sequence[Tuple[str, str]],
             dropped: Sequence[str]) -> StateDict:
    """Rename every key by ``top`` / ``block`` rules, drop ``dropped``
    prefixes; a key no rule knows is an error naming it."""
    converted, unknown = OrderedDict(), []
    for key, value in state_dict.items():
        if key.startswith(tuple(dropped)):
            continue
        match = _BLOCK.fullmatch(key)
        if match:
            chunk, index, rest = match.groups()
            index = chunk if index is None else index
            new = _rename(rest, block)
            new = None if new is None else f'layers.{index}.{new}'
        else:
            new = _rename(key, top)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise ConversionError(
            f'{len(unknown)} keys of this {source} checkpoint have no place '
            f'in mmpretrain\'s backbone: {_preview(unknown)}. Is it an '
            f'official {source} release (see mmpeft/models/pretrain_convert.py '
            'for where each comes from)?')
    return converted


def _preview(keys: Sequence[str], limit: int = 6) -> str:
    keys = list(keys)
    more = f', ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


# What each source's file must hold (official names), to tell a wrong file.
_REQUIRED = {
    'dinov2': ('patch_embed.proj.weight', 'pos_embed', 'blocks.0.norm1.weight',
               'blocks.0.attn.qkv.weight', 'blocks.0.attn.proj.weight'),
    'eva02': ('patch_embed.proj.weight', 'pos_embed', 'blocks.0.norm1.weight',
              'blocks.0.attn.proj.weight', 'blocks.0.mlp.w3.weight'),
    'sam': ('patch_embed.proj.weight', 'pos_embed', 'blocks.0.norm1.weight',
            'blocks.0.attn.qkv.weight', 'blocks.0.mlp.lin1.weight'),
}
# A key that tells which release a wrong file is.
_SIGNATURES = (
    ('image_encoder.blocks.0.mlp.lin1.weight', 'a SAM checkpoint (sam)'),
    ('blocks.0.mlp.lin1.weight', 'a SAM image encoder (sam)'),
    ('blocks.0.attn.q_proj.weight', 'an EVA-02 checkpoint (eva02)'),
    ('blocks.0.attn.q_bias', 'an EVA-02 checkpoint (eva02)'),
    ('blocks.0.ls1.gamma', 'a DINOv2 checkpoint (dinov2)'),
    ('blocks.0.mlp.fc1.weight', 'a DINOv2 / timm ViT checkpoint (dinov2)'),
    ('layers.0.ln1.weight', 'already in mmpretrain layout (no conversion '
     'needed: load it with convert_weights=False)'),
    ('backbone.layers.0.ln1.weight', 'a whole mmpretrain model (set '
     "init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.') "
     'and convert_weights=False)'),
)


def check_source(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ConversionError` naming the keys an official ``source``
    file has and this one lacks, and what the file looks like instead."""
    missing = [k for k in _REQUIRED[source] if k not in state_dict]
    if not missing:
        return
    looks = next((what for key, what in _SIGNATURES if key in state_dict),
                 None)
    found = _preview(sorted(state_dict)) if state_dict else 'no keys'
    raise ConversionError(
        f'Not an official {source} checkpoint: it lacks {", ".join(missing)}'
        f' (found: {found}).' +
        (f' It looks like {looks}.' if looks else '') +
        ' Fix: pass the file of that release, or the converter (--source / '
        'the backbone type) that matches the file.')


def convert_dinov2(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Official DINOv2 (``dinov2_vit*14[_reg4]_pretrain.pth``; also timm /
    DeiT ViTs) -> mmpretrain ``VisionTransformer``: ``blocks.N`` ->
    ``layers.N``, ``ls1.gamma`` / ``ls2.gamma`` -> ``attn.gamma1.weight`` /
    ``ffn.gamma2.weight``, the MLP (``fc1`` / ``fc2``) or fused SwiGLU
    (``w12`` / ``w3``, ViT-g) -> ``ffn.*``, ``norm`` -> ``ln1``;
    ``register_tokens`` kept (the mmpeft host's ``num_register_tokens``);
    ``mask_token`` (masked-image training only) and heads dropped."""
    state_dict = unwrap_official(state_dict)
    check_source(state_dict, 'dinov2')
    return _convert(
        state_dict, 'DINOv2',
        top=(('patch_embed.proj.', 'patch_embed.projection.'),
             ('norm.', 'ln1.'), ('cls_token', 'cls_token'),
             ('pos_embed', 'pos_embed'),
             ('register_tokens', 'register_tokens')),
        block=(('norm1.', 'ln1.'), ('norm2.', 'ln2.'),
               ('attn.qkv.', 'attn.qkv.'), ('attn.proj.', 'attn.proj.'),
               ('ls1.gamma', 'attn.gamma1.weight'),
               ('ls2.gamma', 'ffn.gamma2.weight'),
               ('mlp.fc1.', 'ffn.layers.0.0.'), ('mlp.fc2.', 'ffn.layers.1.'),
               ('mlp.w12.', 'ffn.w12.'), ('mlp.w3.', 'ffn.w3.')),
        dropped=('mask_token', 'head.', 'head_dist.', 'pre_logits.',
                 'fc_norm.'))


def _fuse_eva02(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """EVA-02-B/L keep q / k / v and the SwiGLU's w1 / w2 as separate
    linears, with q and v biases only; mmpretrain fuses them: ``qkv`` =
    [q; k; v] with a zero k bias (as the official attention computes),
    ``w12`` = [w1; w2] (``silu(w1 x) * w2 x``)."""
    fused = OrderedDict()
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition('attn.')
        if leaf in ('q_proj.weight', 'k_proj.weight', 'v_proj.weight',
                    'q_bias', 'v_bias'):
            if leaf == 'q_proj.weight':
                fused[f'{prefix}attn.qkv.weight'] = torch.cat([
                    value, state_dict[f'{prefix}attn.k_proj.weight'],
                    state_dict[f'{prefix}attn.v_proj.weight']])
            elif leaf == 'q_bias':
                fused[f'{prefix}attn.qkv.bias'] = torch.cat([
                    value, torch.zeros_like(value),
                    state_dict[f'{prefix}attn.v_bias']])
            continue
        prefix, _, leaf = key.rpartition('mlp.')
        if leaf in ('w1.weight', 'w1.bias'):
            other = state_dict[f'{prefix}mlp.w2.{leaf[3:]}']
            fused[f'{prefix}mlp.w12.{leaf[3:]}'] = torch.cat([value, other])
            continue
        if leaf in ('w2.weight', 'w2.bias'):
            continue
        fused[key] = value
    return fused


def convert_eva02(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Official EVA-02 (``EVA-02/asuka`` MIM weights, e.g.
    ``eva02_B_pt_in21k_p14.pt``) -> mmpretrain ``ViTEVA02``: the fusions of
    :func:`_fuse_eva02`, ``blocks.N`` -> ``layers.N``, the SwiGLU's
    ``ffn_ln`` -> ``mlp.norm`` (``sub_ln=True``), ``norm`` -> ``ln1``,
    ``fc_norm`` -> ``ln2``; ``mask_token``, the MIM ``lm_head``, heads and
    the RoPE tables (recomputed by the backbone) dropped."""
    state_dict = unwrap_official(state_dict)
    check_source(state_dict, 'eva02')
    # RoPE's tables (``rope.*`` and each block's ``attn.rope.*``): buffers.
    weights = OrderedDict(
        (k, v) for k, v in state_dict.items() if 'rope.' not in k)
    return _convert(
        _fuse_eva02(weights), 'EVA-02',
        top=(('patch_embed.proj.', 'patch_embed.projection.'),
             ('norm.', 'ln1.'), ('fc_norm.', 'ln2.'),
             ('cls_token', 'cls_token'), ('pos_embed', 'pos_embed')),
        block=(('norm1.', 'norm1.'), ('norm2.', 'norm2.'),
               ('attn.qkv.', 'attn.qkv.'), ('attn.proj.', 'attn.proj.'),
               ('mlp.w12.', 'mlp.w12.'), ('mlp.w3.', 'mlp.w3.'),
               ('mlp.ffn_ln.', 'mlp.norm.')),
        dropped=('mask_token', 'lm_head.', 'head.'))


def convert_sam(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Official SAM (``sam_vit_{b,l,h}_*.pth``) -> mmpretrain ``ViTSAM``:
    the ``image_encoder.`` part only, ``blocks.N`` -> ``layers.N``,
    ``mlp.lin1`` / ``lin2`` -> ``ffn.layers.0.0`` / ``ffn.layers.1``, the
    output ``neck`` -> ``channel_reduction``."""
    state_dict = unwrap_official(state_dict)
    if any(k.startswith('image_encoder.') for k in state_dict):
        state_dict = OrderedDict(
            (k[len('image_encoder.'):], v) for k, v in state_dict.items()
            if k.startswith('image_encoder.'))
    check_source(state_dict, 'sam')
    return _convert(
        state_dict, 'SAM',
        top=(('patch_embed.proj.', 'patch_embed.projection.'),
             ('pos_embed', 'pos_embed'), ('neck.', 'channel_reduction.')),
        block=(('norm1.', 'ln1.'), ('norm2.', 'ln2.'), ('attn.', 'attn.'),
               ('mlp.lin1.', 'ffn.layers.0.0.'), ('mlp.lin2.',
                                                  'ffn.layers.1.')),
        dropped=())


CONVERTERS: Dict[str, Callable[[Mapping], StateDict]] = {
    'dinov2': convert_dinov2,
    'eva02': convert_eva02,
    'sam': convert_sam,
}


def resize_pos_embed(pos_embed: torch.Tensor, grid: Sequence[int],
                     extra_tokens: int) -> torch.Tensor:
    """A position table for a ``grid`` = (H, W) of patches: (1, extra +
    h*w, C) tables (DINOv2, EVA-02: the class token first, kept) or (1, h,
    w, C) maps (SAM); the patch part interpolated bicubically to the exact
    grid, as mmpretrain's loaders do (DINOv2's own code interpolates by a
    scale factor with a 0.1 offset: values differ slightly off the grid)."""
    grid = tuple(grid)
    if pos_embed.dim() == 4:
        return (pos_embed if tuple(pos_embed.shape[1:3]) == grid else
                _interpolate(pos_embed, grid))
    extra, patches = pos_embed[:, :extra_tokens], pos_embed[:, extra_tokens:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ConversionError(
            f'pos_embed of shape {tuple(pos_embed.shape)} is not '
            f'{extra_tokens} extra token(s) and a square patch grid.')
    if (side, side) == grid:
        return pos_embed
    resized = _interpolate(patches.reshape(1, side, side, -1), grid)
    return torch.cat([extra, resized.flatten(1, 2)], dim=1)


def _interpolate(maps: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(1, h, w, C) -> (1, *grid, C), bicubic."""
    resized = F.interpolate(maps.permute(0, 3, 1, 2).float(), size=grid,
                            mode='bicubic', align_corners=False)
    return resized.permute(0, 2, 3, 1).to(maps.dtype).contiguous()


def patch_grid(img_size: Sequence[int], patch_size: int) -> List[int]:
    """The patch grid of an image size (mmcv's PatchEmbed, no padding)."""
    return [size // patch_size for size in img_size]
