"""Official DINOv2 / EVA-02 / SAM releases into mmpretrain's backbones
(mmpeft/models/pretrain_convert.py, tools/convert_pretrain_vit.py), on
random weights saved in the official key layouts: each converts and
strict-loads into the stock backbone, DINOv2 computes what the official
model computes (an independent transcription of its forward), the EVA-02
fusions keep q / k / v and w1 / w2 in place, position tables are resized to
the patch-14 grid, and a wrong file is refused naming what it lacks."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from mmpretrain.models.backbones import VisionTransformer, ViTEVA02, ViTSAM
from mmpretrain.models.utils import resize_pos_embed as mmpretrain_resize

from helpers import load_tool
from mmpeft.models import PretrainedMismatchError
from mmpeft.models.pretrain_convert import (ConversionError, convert_dinov2,
                                            convert_eva02, convert_sam,
                                            resize_pos_embed)

DIM, HEADS, HIDDEN, PATCH = 16, 2, 32, 14
SWIGLU_HIDDEN = (int(HIDDEN * 2 / 3) + 7) // 8 * 8  # DINOv2's SwiGLUFFNFused


def tensors(seed):
    generator = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=generator) * 0.2


def official_dinov2(depth=2, grid=4, registers=0, swiglu=False, seed=0):
    """A DINOv2 state dict as ``dinov2_vit*14[_reg4]_pretrain.pth`` names it
    (``DinoVisionTransformer``, block_chunks=0)."""
    r = tensors(seed)
    sd = {'cls_token': r(1, 1, DIM), 'pos_embed': r(1, 1 + grid * grid, DIM),
          'mask_token': r(1, DIM),
          'patch_embed.proj.weight': r(DIM, 3, PATCH, PATCH),
          'patch_embed.proj.bias': r(DIM),
          'norm.weight': 1 + r(DIM), 'norm.bias': r(DIM)}
    if registers:
        sd['register_tokens'] = r(1, registers, DIM)
    for i in range(depth):
        b = f'blocks.{i}.'
        sd.update({
            b + 'norm1.weight': 1 + r(DIM), b + 'norm1.bias': r(DIM),
            b + 'attn.qkv.weight': r(3 * DIM, DIM),
            b + 'attn.qkv.bias': r(3 * DIM),
            b + 'attn.proj.weight': r(DIM, DIM), b + 'attn.proj.bias': r(DIM),
            b + 'ls1.gamma': 0.5 + r(DIM).abs(),
            b + 'norm2.weight': 1 + r(DIM), b + 'norm2.bias': r(DIM),
            b + 'ls2.gamma': 0.5 + r(DIM).abs()})
        if swiglu:
            sd.update({b + 'mlp.w12.weight': r(2 * SWIGLU_HIDDEN, DIM),
                       b + 'mlp.w12.bias': r(2 * SWIGLU_HIDDEN),
                       b + 'mlp.w3.weight': r(DIM, SWIGLU_HIDDEN),
                       b + 'mlp.w3.bias': r(DIM)})
        else:
            sd.update({b + 'mlp.fc1.weight': r(HIDDEN, DIM),
                       b + 'mlp.fc1.bias': r(HIDDEN),
                       b + 'mlp.fc2.weight': r(DIM, HIDDEN),
                       b + 'mlp.fc2.bias': r(DIM)})
    return sd


def dinov2_forward(sd, img, registers, swiglu):
    """The official DINOv2 forward (``prepare_tokens_with_masks``, the
    blocks ``x + ls1(attn(norm1 x))``, ``x + ls2(mlp(norm2 x))``, ``norm``),
    written from its maths: the normed patch tokens as a (B, C, h, w) map."""
    x = F.conv2d(img, sd['patch_embed.proj.weight'],
                 sd['patch_embed.proj.bias'], stride=PATCH)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd['cls_token'].expand(b, -1, -1), x], 1) + sd['pos_embed']
    if registers:
        x = torch.cat([x[:, :1], sd['register_tokens'].expand(b, -1, -1),
                       x[:, 1:]], 1)

    def norm(t, name):
        return F.layer_norm(t, (c, ), sd[f'{name}.weight'], sd[f'{name}.bias'],
                            eps=1e-6)

    for i in range(len({k.split('.')[1] for k in sd if k.startswith('blocks')})):
        p = f'blocks.{i}.'
        n = x.shape[1]
        q, k, v = F.linear(norm(x, p + 'norm1'), sd[p + 'attn.qkv.weight'],
                           sd[p + 'attn.qkv.bias']).reshape(
                               b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(c // HEADS)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        out = F.linear(out, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
        x = x + sd[p + 'ls1.gamma'] * out
        hidden = norm(x, p + 'norm2')
        if swiglu:
            gate, value = F.linear(hidden, sd[p + 'mlp.w12.weight'],
                                   sd[p + 'mlp.w12.bias']).chunk(2, -1)
            out = F.linear(F.silu(gate) * value, sd[p + 'mlp.w3.weight'],
                           sd[p + 'mlp.w3.bias'])
        else:
            out = F.linear(F.gelu(F.linear(hidden, sd[p + 'mlp.fc1.weight'],
                                           sd[p + 'mlp.fc1.bias'])),
                           sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        x = x + sd[p + 'ls2.gamma'] * out
    x = norm(x, 'norm')
    return x[:, 1 + registers:].reshape(b, h, w, c).permute(0, 3, 1, 2)


def dinov2_args(grid=4, swiglu=False):
    return dict(arch=dict(embed_dims=DIM, num_layers=2, num_heads=HEADS,
                          feedforward_channels=HIDDEN),
                img_size=grid * PATCH, patch_size=PATCH,
                layer_scale_init_value=1e-5, out_type='featmap',
                out_indices=-1,
                **(dict(layer_cfgs=dict(ffn_type='swiglu_fused'))
                   if swiglu else {}))


def close(out, ref):
    torch.testing.assert_close(out, ref, rtol=1e-5,
                               atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize('swiglu', [False, True], ids=['mlp', 'swiglu'])
def test_dinov2_converts_strict_loads_and_computes_the_official_model(swiglu):
    official = official_dinov2(swiglu=swiglu)
    stock = VisionTransformer(**dinov2_args(swiglu=swiglu))
    stock.load_state_dict(convert_dinov2(official), strict=True)
    stock.eval()
    img = torch.randn(2, 3, 4 * PATCH, 4 * PATCH)
    with torch.no_grad():
        close(stock(img)[0], dinov2_forward(official, img, 0, swiglu))


def test_the_host_reads_the_official_file_with_registers(tmp_path):
    """convert_weights=True with a ``_reg4``-style file: registers in place,
    the official forward, adapters (identity LoRA) left at their init."""
    official = official_dinov2(registers=4, swiglu=True)
    path = str(tmp_path / 'dinov2_vits14_reg4_pretrain.pth')
    torch.save(official, path)
    model = MODELS.build(dict(
        type='AdapterPretrainViT', num_register_tokens=4,
        convert_weights=True, adapters=dict(attn=dict(qkv=dict(type='LoRA'))),
        init_cfg=dict(type='Pretrained', checkpoint=path),
        **dinov2_args(swiglu=True)))
    model.init_weights()
    model.eval()
    assert torch.equal(model.register_tokens, official['register_tokens'])
    img = torch.randn(2, 3, 4 * PATCH, 4 * PATCH)
    with torch.no_grad():
        close(model(img)[0], dinov2_forward(official, img, 4, True))


def test_position_table_is_resized_to_the_patch_14_grid(tmp_path):
    """DINOv2's 518-pixel table (37x37; here 4x4) for another image size:
    the tool's --img-size and the backbone's loader give the same table,
    bicubic on the patch part, the class row kept."""
    official = official_dinov2(grid=4)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'mmpre.pth')
    torch.save(official, src)
    assert load_tool('convert_pretrain_vit').main(
        ['dinov2', src, dst, '--img-size', '84', '84']) == 0
    converted = torch.load(dst)
    table = converted['pos_embed']
    assert table.shape == (1, 1 + 6 * 6, DIM)
    assert torch.equal(table[:, :1], official['pos_embed'][:, :1])
    close(table, mmpretrain_resize(official['pos_embed'], (4, 4), (6, 6),
                                   'bicubic', 1))
    stock = VisionTransformer(**dinov2_args(grid=6))
    stock.load_state_dict(converted, strict=True)
    # The stock loader resizes an unresized table the same way.
    stock.load_state_dict(convert_dinov2(official), strict=True)
    close(stock.pos_embed.detach(), table)
    assert resize_pos_embed(table, (6, 6), 1) is table


def official_eva02(depth=2, seed=0):
    """EVA-02-B/L as ``EVA-02/asuka`` names it (``subln``, ``naiveswiglu``):
    separate q / k / v projections with q and v biases, SwiGLU w1 / w2 / w3
    with its ffn_ln; the RoPE tables, mask token and MIM head."""
    r = tensors(seed)
    hidden = 24
    sd = {'cls_token': r(1, 1, DIM), 'pos_embed': r(1, 17, DIM),
          'mask_token': r(1, 1, DIM),
          'patch_embed.proj.weight': r(DIM, 3, PATCH, PATCH),
          'patch_embed.proj.bias': r(DIM), 'norm.weight': 1 + r(DIM),
          'norm.bias': r(DIM), 'lm_head.weight': r(8, DIM),
          'lm_head.bias': r(8), 'rope.freqs_cos': r(16, 4),
          'rope.freqs_sin': r(16, 4)}
    for i in range(depth):
        b = f'blocks.{i}.'
        sd.update({
            b + 'norm1.weight': 1 + r(DIM), b + 'norm1.bias': r(DIM),
            b + 'attn.q_proj.weight': r(DIM, DIM),
            b + 'attn.k_proj.weight': r(DIM, DIM),
            b + 'attn.v_proj.weight': r(DIM, DIM),
            b + 'attn.q_bias': r(DIM), b + 'attn.v_bias': r(DIM),
            b + 'attn.rope.freqs_cos': r(16, 4),
            b + 'attn.rope.freqs_sin': r(16, 4),
            b + 'attn.proj.weight': r(DIM, DIM), b + 'attn.proj.bias': r(DIM),
            b + 'norm2.weight': 1 + r(DIM), b + 'norm2.bias': r(DIM),
            b + 'mlp.w1.weight': r(hidden, DIM), b + 'mlp.w1.bias': r(hidden),
            b + 'mlp.w2.weight': r(hidden, DIM), b + 'mlp.w2.bias': r(hidden),
            b + 'mlp.ffn_ln.weight': 1 + r(hidden),
            b + 'mlp.ffn_ln.bias': r(hidden),
            b + 'mlp.w3.weight': r(DIM, hidden), b + 'mlp.w3.bias': r(DIM)})
    return sd


def test_eva02_converts_loads_and_keeps_q_k_v_and_w1_w2_in_place():
    official = official_eva02()
    model = ViTEVA02(arch=dict(embed_dims=DIM, num_layers=2, num_heads=HEADS,
                               feedforward_channels=24),
                     img_size=4 * PATCH, patch_size=PATCH, sub_ln=True)
    missing, unexpected = model.load_state_dict(
        convert_eva02({'module': official}), strict=False)
    # RoPE's tables are buffers computed from the grid, not weights.
    assert not unexpected
    assert missing and all(k.split('.')[-2] == 'rope' for k in missing)
    model.eval()
    x = torch.randn(2, 17, DIM)
    p, layer = 'blocks.0.', model.layers[0]
    with torch.no_grad():
        q = F.linear(x, official[p + 'attn.q_proj.weight'],
                     official[p + 'attn.q_bias'])
        k = F.linear(x, official[p + 'attn.k_proj.weight'])
        v = F.linear(x, official[p + 'attn.v_proj.weight'],
                     official[p + 'attn.v_bias'])
        close(layer.attn.qkv(x), torch.cat([q, k, v], -1))
        hidden = F.silu(F.linear(x, official[p + 'mlp.w1.weight'],
                                 official[p + 'mlp.w1.bias'])) * F.linear(
                                     x, official[p + 'mlp.w2.weight'],
                                     official[p + 'mlp.w2.bias'])
        hidden = F.layer_norm(hidden, (24, ), official[p + 'mlp.ffn_ln.weight'],
                              official[p + 'mlp.ffn_ln.bias'])
        close(layer.mlp(x), F.linear(hidden, official[p + 'mlp.w3.weight'],
                                     official[p + 'mlp.w3.bias']))


def official_sam(seed=0):
    """A SAM checkpoint (``sam_vit_*.pth``): the image encoder (one windowed
    and one global block, relative positions, the conv neck) beside the
    prompt encoder and mask decoder."""
    r = tensors(seed)
    sd = {'image_encoder.pos_embed': r(1, 4, 4, DIM),
          'image_encoder.patch_embed.proj.weight': r(DIM, 3, 8, 8),
          'image_encoder.patch_embed.proj.bias': r(DIM),
          'image_encoder.neck.0.weight': r(8, DIM, 1, 1),
          'image_encoder.neck.1.weight': 1 + r(8),
          'image_encoder.neck.1.bias': r(8),
          'image_encoder.neck.2.weight': r(8, 8, 3, 3),
          'image_encoder.neck.3.weight': 1 + r(8),
          'image_encoder.neck.3.bias': r(8),
          'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix':
          r(2, 4),
          'mask_decoder.iou_token.weight': r(1, 8)}
    for i, size in enumerate((2, 4)):  # window 2, then global on 4x4
        b = f'image_encoder.blocks.{i}.'
        sd.update({
            b + 'norm1.weight': 1 + r(DIM), b + 'norm1.bias': r(DIM),
            b + 'attn.qkv.weight': r(3 * DIM, DIM),
            b + 'attn.qkv.bias': r(3 * DIM),
            b + 'attn.proj.weight': r(DIM, DIM), b + 'attn.proj.bias': r(DIM),
            b + 'attn.rel_pos_h': r(2 * size - 1, DIM // HEADS),
            b + 'attn.rel_pos_w': r(2 * size - 1, DIM // HEADS),
            b + 'norm2.weight': 1 + r(DIM), b + 'norm2.bias': r(DIM),
            b + 'mlp.lin1.weight': r(HIDDEN, DIM), b + 'mlp.lin1.bias': r(HIDDEN),
            b + 'mlp.lin2.weight': r(DIM, HIDDEN), b + 'mlp.lin2.bias': r(DIM)})
    return sd


def test_sam_image_encoder_converts_and_strict_loads():
    official = official_sam()
    converted = convert_sam(official)
    model = ViTSAM(arch=dict(embed_dims=DIM, num_layers=2, num_heads=HEADS,
                             feedforward_channels=HIDDEN,
                             global_attn_indexes=[1]),
                   img_size=32, patch_size=8, window_size=2, out_channels=8)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.layers[1].ffn.layers[1].weight,
                       official['image_encoder.blocks.1.mlp.lin2.weight'])
    assert torch.equal(model.channel_reduction[2].weight,
                       official['image_encoder.neck.2.weight'])


@pytest.mark.parametrize('convert,wrong,missing,looks', [
    (convert_dinov2, official_sam, 'patch_embed.proj.weight', 'SAM'),
    (convert_eva02, official_dinov2, 'blocks.0.mlp.w3.weight', 'DINOv2'),
    (convert_sam, official_eva02, 'blocks.0.mlp.lin1.weight', 'EVA-02'),
])
def test_a_file_of_another_release_is_refused_naming_what_it_lacks(
        convert, wrong, missing, looks):
    with pytest.raises(ConversionError,
                       match=f'lacks .*{missing}.*looks like an? {looks}'):
        convert(wrong())


def test_a_key_no_rule_knows_is_named():
    official = official_dinov2()
    official['blocks.1.attn.q_norm.weight'] = torch.ones(DIM)
    with pytest.raises(ConversionError, match='blocks.1.attn.q_norm.weight'):
        convert_dinov2(official)


def test_a_truncated_file_is_refused_by_the_host(tmp_path):
    """A release missing its second block: the host's guard names the
    frozen weights it would leave random."""
    official = {k: v for k, v in official_dinov2().items()
                if not k.startswith('blocks.1.')}
    path = str(tmp_path / 'truncated.pth')
    torch.save(official, path)
    model = MODELS.build(dict(
        type='AdapterPretrainViT', convert_weights=True, adapters=dict(),
        init_cfg=dict(type='Pretrained', checkpoint=path), **dinov2_args()))
    with pytest.raises(PretrainedMismatchError,
                       match=r'missing \(\d+\): layers\.1\.'):
        model.init_weights()


def test_a_converted_file_with_convert_weights_says_so(tmp_path):
    path = str(tmp_path / 'converted.pth')
    torch.save(convert_dinov2(official_dinov2()), path)
    model = MODELS.build(dict(
        type='AdapterPretrainViT', convert_weights=True, adapters=dict(),
        init_cfg=dict(type='Pretrained', checkpoint=path), **dinov2_args()))
    with pytest.raises(PretrainedMismatchError,
                       match='already in mmpretrain layout'):
        model.init_weights()


def test_the_tool_refuses_a_wrong_file_and_its_own_input(tmp_path, capsys):
    tool = load_tool('convert_pretrain_vit')
    src = str(tmp_path / 'sam.pth')
    torch.save(official_sam(), src)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['dinov2', src, str(tmp_path / 'out.pth')])
    assert exit_info.value.code == 1
    assert 'looks like a SAM' in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()
    with pytest.raises(SystemExit):
        tool.main(['sam', src, src])
    assert 'is the input file' in capsys.readouterr().err
