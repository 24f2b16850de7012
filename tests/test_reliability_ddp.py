"""Two-process DDP through tools/dist_train.sh (torchrun, gloo on CPU) for
each method, with NaNGuardHook and ExactResumeHook on: both ranks end with
the same weights, the frozen weights did not move, the adapters did, and
only rank 0 wrote the checkpoint, once."""
import glob
import os.path as osp

import pytest
import torch

from test_reliability_support import (METHODS, add_custom_hooks, free_port,
                                      load_checkpoint, output_tail, run_tool,
                                      tiny_method_cfg, write_module)

# Imported by the config in both ranks. CPU-only machines need nothing
# here: mmpeft/compat.py makes mmengine's launcher use gloo without CUDA.
DDP_PROBE = '''
    import os.path as osp

    import torch
    from mmengine.dist import get_rank, get_world_size
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS


    @HOOKS.register_module()
    class RankDumpHook(Hook):
        """Each rank saves its weights before and after training and notes
        every checkpoint it writes."""
        priority = 'LOWEST'

        def before_train(self, runner):
            self._dump(runner, 'before')

        def after_train(self, runner):
            self._dump(runner, 'after')

        def before_save_checkpoint(self, runner, checkpoint):
            name = f'saves_rank{get_rank()}.txt'
            with open(osp.join(runner.work_dir, name), 'a') as f:
                f.write(f"{checkpoint['meta']['iter']}\\n")

        def _dump(self, runner, stage):
            model = runner.model.module if is_model_wrapper(
                runner.model) else runner.model
            torch.save(
                dict(state=model.state_dict(),
                     params=[n for n, _ in model.named_parameters()],
                     trainable=[n for n, p in model.named_parameters()
                                if p.requires_grad],
                     wrapper=type(runner.model).__name__,
                     world_size=get_world_size()),
                osp.join(runner.work_dir, f'rank{get_rank()}_{stage}.pth'))
'''
ITERS = 3


@pytest.mark.slow
@pytest.mark.parametrize('method', METHODS)
def test_two_process_ddp(method, demo_data, tmp_path):
    work_dir = tmp_path / 'work'
    cfg = tiny_method_cfg(method, demo_data, work_dir, max_iters=ITERS,
                          mimi_interval=2)
    cfg.custom_imports = dict(imports=['mmpeft', 'ddp_probe'],
                              allow_failed_imports=False)
    # mmpeft's safety hooks under DDP too (NaNGuardHook all-reduces a flag).
    add_custom_hooks(cfg, dict(type='NaNGuardHook'),
                     dict(type='ExactResumeHook'), dict(type='RankDumpHook'))
    write_module(str(tmp_path), 'ddp_probe', DDP_PROBE)
    config = str(tmp_path / f'{method}.py')
    cfg.dump(config)

    proc = run_tool(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
         str(work_dir)],
        pythonpath=[str(tmp_path)],
        env=dict(PORT=str(free_port())))
    assert proc.returncode == 0, output_tail(proc)

    dumps = {(rank, stage): load_checkpoint(
        str(work_dir / f'rank{rank}_{stage}.pth'))
             for rank in (0, 1) for stage in ('before', 'after')}
    assert {d['wrapper'] for d in dumps.values()} == {
        'MMDistributedDataParallel'}
    assert {d['world_size'] for d in dumps.values()} == {2}
    trainable = dumps[0, 'after']['trainable']
    adapters = [k for k in trainable if k.startswith('backbone.')]
    assert adapters and all(
        'adapter' in k for k in adapters), adapters[:5]

    # Same weights on both ranks, before (DDP broadcast) and after.
    for stage in ('before', 'after'):
        ours, theirs = dumps[0, stage]['state'], dumps[1, stage]['state']
        different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
        assert not different, f'ranks differ {stage} training: {different}'

    # Frozen backbone weights unchanged, adapters trained.
    before, after = dumps[0, 'before']['state'], dumps[0, 'after']['state']
    frozen = [k for k in dumps[0, 'after']['params']
              if k.startswith('backbone.') and k not in trainable]
    assert frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in adapters)
    if method == 'mimi':  # a pruning round ran, the same on both ranks
        masks = [k for k in after if k.endswith('neuron_mask')]
        assert sum(after[k].sum() for k in masks) < sum(
            before[k].sum() for k in masks)

    # The checkpoint and the config's AdapterMergeHook companions: written
    # once, by rank 0, with rank 0's final weights.
    assert sorted(osp.basename(p) for p in glob.glob(
        str(work_dir / '*.pth')) if 'rank' not in p) == [
            f'iter_{ITERS}{suffix}.pth'
            for suffix in ('', '_adapters', '_deploy')]
    assert (work_dir / 'saves_rank0.txt').read_text().split() == [str(ITERS)]
    assert not (work_dir / 'saves_rank1.txt').exists()
    saved = load_checkpoint(str(work_dir / f'iter_{ITERS}.pth'))['state_dict']
    assert sorted(saved) == sorted(after)
    assert all(torch.equal(saved[k], after[k]) for k in after)
