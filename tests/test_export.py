"""Deploy and adapter-only checkpoints: the deploy model computes what the
training model computes (RepAdapter: in the stock ViT, without mmpeft), an
adapter file on its base reproduces the full model exactly and refuses a
wrong base or method, it is small, and the tools write the same files."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner import Runner, load_checkpoint

from helpers import load_tool
from mmpeft.engine import (AdapterCheckpointError, adapter_checkpoint,
                           load_adapter_checkpoint, write_deploy)
from mmpeft.engine.export import build_from_config, save_atomic
from peft_tiny import mona_seg_cfg, repadapter_seg_cfg


def train_model(cfg):
    """A built model whose trainable tensors moved away from their init (a
    zero-init RepAdapter / MiMi up-projection would merge trivially)."""
    torch.manual_seed(0)
    model = build_from_config(cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def seg_logits(model):
    torch.manual_seed(1)
    return model(torch.randn(2, 3, 64, 64), mode='tensor')


def prune_half(model):
    for _, adapter in model.backbone.named_slots():
        mask = torch.ones_like(adapter.neuron_mask)
        mask[::2] = 0
        adapter.set_mask(mask)


CASES = {
    'mona': lambda data, d: mona_seg_cfg(data, d),
    'mimi': lambda data, d: mona_seg_cfg(data, d, backbone='MiMiSwin'),
    'repadapter': repadapter_seg_cfg,
}


@pytest.mark.parametrize('method', CASES)
def test_deploy_config_rebuilds_the_merged_model(method, demo_data, tmp_path):
    cfg = CASES[method](demo_data, tmp_path)
    model = train_model(cfg)
    if method == 'mimi':
        prune_half(model)
    expected = seg_logits(model)

    ckpt, config = str(tmp_path / 'deploy.pth'), str(tmp_path / 'deploy.py')
    write_deploy(model, cfg, ckpt, config)
    deploy_cfg = Config.fromfile(config)
    deployed = build_from_config(deploy_cfg)
    state = torch.load(ckpt)['state_dict']
    deployed.load_state_dict(state, strict=True)
    torch.testing.assert_close(seg_logits(deployed.eval()),
                               expected,
                               rtol=1e-4,
                               atol=1e-4)

    backbone = deploy_cfg.model.backbone
    assert deploy_cfg.load_from == ckpt
    if method == 'repadapter':  # a stock ViT, with the stock keys
        assert backbone.type == 'mmseg.VisionTransformer'
        assert 'adapter_cfg' not in backbone
        assert not any('adapter' in key for key in state)
    elif method == 'mona':
        assert backbone.adapter_cfg.deploy is True
    else:
        widths = backbone.adapter_widths
        assert widths == model.backbone.adapter_widths()
        assert sum(widths) == sum(
            a.hidden_dim for _, a in model.backbone.named_slots()) // 2


def run_and_test(cfg):
    """Train with the hooks, then test the training checkpoint."""
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = []
    Runner.from_cfg(cfg).train()
    cfg.load_from = osp.join(cfg.work_dir, 'iter_2.pth')
    return Runner.from_cfg(cfg).test()


@pytest.fixture(scope='module')
def mona_run(demo_data, tmp_path_factory):
    """(config file, work dir, test metrics of iter_2.pth) of a 2-iteration
    Mona run with PEFTFreezeHook and AdapterMergeHook."""
    work_dir = tmp_path_factory.mktemp('mona_run')
    cfg = mona_seg_cfg(demo_data, work_dir)
    metrics = run_and_test(cfg)
    config = str(work_dir / 'train.py')
    cfg.dump(config)
    return config, work_dir, metrics


def test_mona_deploy_checkpoint_same_metric(mona_run):
    _, work_dir, metrics = mona_run
    deploy_cfg = Config.fromfile(str(work_dir / 'iter_2_deploy.py'))
    deploy_cfg.work_dir = str(work_dir / 'deploy')
    assert Runner.from_cfg(deploy_cfg).test() == metrics


NO_MMPEFT_TEST = '''
import json, sys
sys.modules['mmpeft'] = None  # any `import mmpeft` now fails
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile(sys.argv[1])
cfg.work_dir = sys.argv[2]
print('METRICS', json.dumps(Runner.from_cfg(cfg).test(), default=float))
'''


def test_repadapter_deploy_runs_in_stock_vit_without_mmpeft(
        demo_data, tmp_path):
    metrics = run_and_test(repadapter_seg_cfg(demo_data, tmp_path))
    deploy_config = str(tmp_path / 'iter_2_deploy.py')
    assert 'mmpeft' not in open(deploy_config).read()
    result = subprocess.run([
        sys.executable, '-c', NO_MMPEFT_TEST, deploy_config,
        str(tmp_path / 'deploy')
    ],
                            cwd=str(tmp_path),
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith('METRICS')]
    assert json.loads(line[-1].split(' ', 1)[1]) == metrics


def split_base(model, tmp_path):
    """(base checkpoint path, adapter checkpoint path) of a trained model."""
    adapters = adapter_checkpoint(model)
    base = {
        k: v
        for k, v in model.state_dict().items()
        if k not in adapters['state_dict']
    }
    base_path, adapter_path = tmp_path / 'base.pth', tmp_path / 'adapters.pth'
    torch.save(dict(state_dict=base), base_path)
    save_atomic(adapters, str(adapter_path))
    return str(base_path), str(adapter_path)


@pytest.mark.parametrize('backbone', ['MonaSwinTransformer', 'MiMiSwin'])
def test_adapter_checkpoint_on_base_reproduces_outputs(backbone, demo_data,
                                                       tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path, backbone=backbone)
    model = train_model(cfg)
    if backbone == 'MiMiSwin':
        prune_half(model)  # the masks must travel with the adapters
    base, adapters = split_base(model, tmp_path)
    assert set(torch.load(adapters)['state_dict']) == {
        n
        for n, p in model.named_parameters() if p.requires_grad
    } | {
        n
        for n in model.state_dict()
        if n.endswith(('running_mean', 'running_var', 'num_batches_tracked',
                       'neuron_mask'))
    }  # the heads' BatchNorm statistics, MiMi's masks

    torch.manual_seed(123)  # another random init everywhere
    rebuilt = build_from_config(cfg).eval()
    load_checkpoint(rebuilt, base, strict=False)
    info = load_adapter_checkpoint(rebuilt, adapters)
    assert info['backbone_type'] == backbone
    assert torch.equal(seg_logits(rebuilt), seg_logits(model))


def test_adapter_checkpoint_refuses_wrong_base_or_method(demo_data, tmp_path):
    cfg = mona_seg_cfg(demo_data, tmp_path)
    model = train_model(cfg)
    base, adapters = split_base(model, tmp_path)

    with torch.no_grad():
        model.backbone.stages[0].blocks[0].attn.w_msa.qkv.weight[0, 0] += 1e-3
    with pytest.raises(AdapterCheckpointError, match='Wrong base checkpoint'):
        load_adapter_checkpoint(model, adapters)

    partial = torch.load(base)
    partial['state_dict'].pop('backbone.patch_embed.projection.weight')
    from mmpeft.engine.export import apply_adapter_checkpoint
    with pytest.raises(AdapterCheckpointError, match='lacks 1 of'):
        apply_adapter_checkpoint(model, partial, adapters)

    vit = train_model(repadapter_seg_cfg(demo_data, tmp_path / 'vit'))
    vit_adapters = str(tmp_path / 'vit_adapters.pth')
    save_atomic(adapter_checkpoint(vit), vit_adapters)
    with pytest.raises(AdapterCheckpointError, match='method'):
        load_adapter_checkpoint(model, vit_adapters)

    with pytest.raises(AdapterCheckpointError, match='not an mmpeft'):
        load_adapter_checkpoint(model, base)


def test_swin_b_adapter_file_under_5_percent(tmp_path):
    backbone = MODELS.build(
        dict(type='MonaSwinTransformer',
             embed_dims=128,
             depths=[2, 2, 18, 2],
             num_heads=[4, 8, 16, 32]))
    full, adapters = tmp_path / 'full.pth', tmp_path / 'adapters.pth'
    torch.save(dict(state_dict=backbone.state_dict()), full)
    checkpoint = adapter_checkpoint(backbone)
    save_atomic(checkpoint, str(adapters))

    # DESIGN.md: Mona has 3,667,456 parameters in Swin-B.
    assert sum(t.numel() for t in checkpoint['state_dict'].values()) \
        == 3_667_456
    ratio = os.path.getsize(adapters) / os.path.getsize(full)
    print(f'Swin-B Mona: adapters {os.path.getsize(adapters):,} B, full '
          f'{os.path.getsize(full):,} B, ratio {ratio:.4f}')
    assert ratio < 0.05


def run_tool(name, *args, monkeypatch):
    """tools/<name>.py main() with ``args`` as its command line."""
    monkeypatch.setattr(sys, 'argv', [f'{name}.py', *map(str, args)])
    load_tool(name).main()


@pytest.mark.parametrize('tool', ['merge_adapters', 'count_params'])
def test_help(tool, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool(tool, '--help', monkeypatch=monkeypatch)
    assert exit_.value.code == 0 and 'usage:' in capsys.readouterr().out


def test_count_params_prints_the_hook_table(mona_run, monkeypatch, capsys):
    config, work_dir, _ = mona_run
    table = json.load(open(work_dir / 'peft_params.json'))
    run_tool('count_params',
             config,
             '--json',
             work_dir / 'counted.json',
             monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert f"{table['total']['total']:,}" in printed
    assert f"{table['total']['trainable']:,}" in printed
    assert json.load(open(work_dir / 'counted.json')) == table


def test_merge_adapters_tool_writes_what_the_hook_wrote(mona_run, monkeypatch):
    config, work_dir, _ = mona_run
    out = work_dir / 'offline' / 'merged.pth'
    run_tool('merge_adapters',
             config,
             work_dir / 'iter_2.pth',
             out,
             '--adapters',
             work_dir / 'offline' / 'adapters.pth',
             monkeypatch=monkeypatch)
    hook_state = torch.load(work_dir / 'iter_2_deploy.pth')['state_dict']
    tool_state = torch.load(out)['state_dict']
    assert hook_state.keys() == tool_state.keys()
    assert all(torch.equal(hook_state[k], tool_state[k]) for k in hook_state)
    assert osp.isfile(work_dir / 'offline' / 'merged.py')
    hook_adapters = torch.load(work_dir / 'iter_2_adapters.pth')
    tool_adapters = torch.load(work_dir / 'offline' / 'adapters.pth')
    assert hook_adapters['meta']['mmpeft_adapters']['base'] == \
        tool_adapters['meta']['mmpeft_adapters']['base']
    assert all(
        torch.equal(hook_adapters['state_dict'][k], v)
        for k, v in tool_adapters['state_dict'].items())


def test_test_tool_with_adapter_on_base(mona_run, monkeypatch, capsys):
    """tools/test.py BASE --adapter A equals tools/test.py FULL; a wrong base
    is refused."""
    config, work_dir, metrics = mona_run
    adapters = work_dir / 'iter_2_adapters.pth'
    full = torch.load(work_dir / 'iter_2.pth', weights_only=False)
    trained = torch.load(adapters)['state_dict']
    base = {k: v for k, v in full['state_dict'].items() if k not in trained}
    torch.save(dict(state_dict=base), work_dir / 'base.pth')
    run_tool('test',
             config,
             work_dir / 'base.pth',
             '--adapter',
             adapters,
             '--work-dir',
             work_dir / 'test',
             monkeypatch=monkeypatch)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(printed) == metrics

    key = 'backbone.patch_embed.projection.weight'
    base[key] = base[key] + 1e-3
    torch.save(dict(state_dict=base), work_dir / 'wrong_base.pth')
    with pytest.raises(AdapterCheckpointError, match='Wrong base checkpoint'):
        run_tool('test',
                 config,
                 work_dir / 'wrong_base.pth',
                 '--adapter',
                 adapters,
                 '--work-dir',
                 work_dir / 'test',
                 monkeypatch=monkeypatch)


def test_atomic_files_get_the_mode_of_a_plain_write(tmp_path):
    """Deploy / adapter files are as readable as the training checkpoint
    beside them (mkstemp alone would leave them owner-only)."""
    plain = tmp_path / 'plain.pth'
    torch.save({}, plain)
    atomic = tmp_path / 'atomic.pth'
    save_atomic({}, str(atomic))
    assert atomic.stat().st_mode == plain.stat().st_mode
