"""``tools/dist_train.sh CONFIG 2`` on a machine without CUDA, through the real
script and the stock runtime config (``dist_cfg=dict(backend='nccl')``, no
``model_wrapper_cfg``): mmpeft/compat.py picks gloo, skips
``torch.cuda.set_device`` and DDP's ``device_ids``; nothing is stubbed."""
import glob
import os.path as osp

import pytest
import torch

from test_reliability_support import (free_port, load_checkpoint, output_tail,
                                      run_tool, tiny_method_cfg)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='the CPU path: this machine has CUDA')
def test_dist_train_two_cpu_processes(demo_data, tmp_path):
    work_dir = tmp_path / 'work'
    cfg = tiny_method_cfg('mona', demo_data, work_dir, max_iters=2)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # as shipped
    assert 'model_wrapper_cfg' not in cfg
    config = str(tmp_path / 'mona.py')
    cfg.dump(config)

    proc = run_tool(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
         str(work_dir)],
        env=dict(PORT=str(free_port())))
    assert proc.returncode == 0, output_tail(proc)
    log = open(glob.glob(str(work_dir / '*' / '*.log'))[0]).read()
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    saved = load_checkpoint(str(work_dir / 'iter_2.pth'))
    assert saved['meta']['iter'] == 2
    assert osp.exists(work_dir / 'iter_2_deploy.pth')
