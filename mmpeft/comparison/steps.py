"""The tool runs of a comparison (tools/train.py, dist_train.sh, test.py,
count_params.py as subprocesses) and what each leaves behind to read: the
checkpoint, the training log's step times, the metrics, the parameter
table, the files a fine-tuned task adds."""
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from .plan import REPO, Row


def tool(script: str) -> str:
    return osp.join(REPO, 'tools', script)


def train_command(config: str, work_dir: str, gpus: int,
                  port: int = 29500, cfg_options: Sequence[str] = ()
                  ) -> List[str]:
    """tools/train.py, or tools/dist_train.sh on ``gpus`` > 0 (rendezvous
    on ``port``: runs side by side need their own); auto-resume (a re-run
    goes on from the last checkpoint of an interrupted one)."""
    args = ['--work-dir', work_dir, '--resume', *_options(cfg_options)]
    if gpus:
        return [*_dist_env(port), tool('dist_train.sh'), config, str(gpus),
                *args]
    return [sys.executable, tool('train.py'), config, *args]


def _options(cfg_options: Sequence[str]) -> List[str]:
    return ['--cfg-options', *cfg_options] if cfg_options else []


def _dist_env(port: int) -> List[str]:
    """The dist scripts' launcher: this Python (not the first on PATH) and
    the rendezvous port."""
    return ['env', f'PORT={port}', f'PYTHON={sys.executable}', 'bash']


def test_command(config: str, checkpoint: str, work_dir: str, gpus: int,
                 port: int = 29500, cfg_options: Sequence[str] = ()
                 ) -> List[str]:
    args = ['--work-dir', work_dir, *_options(cfg_options)]
    if gpus:
        return [*_dist_env(port), tool('dist_test.sh'), config, checkpoint,
                str(gpus), *args]
    return [sys.executable, tool('test.py'), config, checkpoint, *args]


_ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


class StepFailed(RuntimeError):
    """A tool run of the comparison failed; the message names its log."""


def run_logged(cmd: List[str], log: str, what: str, progress=None,
               cwd: Optional[str] = None) -> dict:
    """Run ``cmd`` in ``cwd`` (default: here) with its output in ``log``;
    report training progress through ``progress(done, total)``. Returns the
    peak resident memory of the process tree's largest process (MiB), the
    wall time, the CPU time of the tree (user + system: what it costs on a
    quiet machine) and the host's 1-minute load average while it ran (mean
    and max of samples every 2 s). Raises :class:`StepFailed` naming the log on
    a non-zero exit."""
    os.makedirs(osp.dirname(log) or '.', exist_ok=True)
    start = time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    loads = [os.getloadavg()[0]]
    with open(log, 'a') as out:
        out.write(f'$ {" ".join(cmd)}\n')
        out.flush()
        offset = out.tell()  # progress from this run, not an earlier one
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd or os.getcwd(), env=env)
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch, args=(log, offset, progress, stop, loads),
            daemon=True)
        watcher.start()
        # wait4, not Popen.wait: its rusage holds the peak RSS of the child
        # and of the processes it reaped (data workers, ranks).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        watcher.join()
    if proc.returncode != 0:
        raise StepFailed(f'{what} failed (exit {proc.returncode}); see {log}')
    return dict(peak_rss_mib=usage.ru_maxrss / 1024,
                wall_s=time.time() - start,
                cpu_s=usage.ru_utime + usage.ru_stime,
                load_mean=statistics.fmean(loads), load_max=max(loads))


def _watch(log: str, offset: int, progress, stop: threading.Event,
           loads: List[float]) -> None:
    seen = None
    while not stop.wait(2.0):
        loads.append(os.getloadavg()[0])
        if progress is None:
            continue
        try:
            with open(log, 'rb') as f:
                f.seek(max(offset, os.path.getsize(log) - 20000))
                found = _ITER.findall(f.read().decode('utf-8', 'replace'))
        except OSError:
            continue
        if found and found[-1] != seen:
            seen = found[-1]
            progress(int(seen[0]), int(seen[1]))


def read_json(path: str, required: Sequence[str] = ()):
    """``(data, None)``, or ``(None, why)`` when the file is missing, empty,
    truncated, not a JSON object or lacks a ``required`` key."""
    if not osp.exists(path):
        return None, 'missing'
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f'unreadable ({type(err).__name__}: {err})'
    if not isinstance(data, dict):
        return None, f'not a JSON object ({type(data).__name__})'
    missing = [key for key in required if key not in data]
    if missing:
        return None, f'lacks {", ".join(missing)}'
    return data, None


def write_json(path: str, data) -> None:
    """Written whole or not at all (a kill leaves the old file or none)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def last_checkpoint(work_dir: str) -> str:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        raise StepFailed(f'{work_dir} has no last_checkpoint: the training '
                         'run saved no checkpoint')
    with open(path) as f:
        return f.read().strip()


def logged_scalars(work_dir: str) -> List[dict]:
    """The log records of every run in ``work_dir`` (mmengine's
    ``<timestamp>/vis_data/scalars.json``), oldest first; a line a killed
    run left half-written is skipped."""
    records = []
    for stamp in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, stamp, 'vis_data', 'scalars.json')
        if osp.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        continue
    return [r for r in records if isinstance(r, dict)]


def train_scalars(work_dir: str) -> List[dict]:
    """The training records of :func:`logged_scalars` (they have a loss)."""
    return [r for r in logged_scalars(work_dir) if 'loss' in r]


def step_stats(records: List[dict]) -> dict:
    """Median seconds per training step (the first logged window, with its
    warm-up, left out when there are others) and the peak device memory
    mmengine logs on a GPU (MiB), None on CPU."""
    times = [r['time'] for r in records if 'time' in r]
    times = times[1:] if len(times) > 1 else times
    memory = [r['memory'] for r in records if 'memory' in r]
    return dict(step_time_s=statistics.median(times) if times else None,
                gpu_memory_mib=max(memory) if memory else None)


def test_metrics(log: str) -> Dict[str, float]:
    """The metrics tools/test.py prints as its last JSON line."""
    with open(log) as f:
        for line in reversed(f.read().splitlines()):
            if line.startswith('{'):
                try:
                    return json.loads(line)
                except ValueError:
                    break
    raise StepFailed(f'no metrics line in {log}')


def val_as_test_config(config: str, out: str) -> str:
    """``config`` with its validation split as the test split, written to
    ``out``: tools/test.py on it scores a model on the validation data."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.dump(out)
    return out


def trainable_share(params_json: str) -> dict:
    """Trainable backbone-side parameters (pretrained weights that train
    plus adapters) and their percentage of the pretrained backbone, from a
    tools/count_params.py / PEFTFreezeHook table."""
    from ..engine.param_table import ADAPTERS, BACKBONE
    with open(params_json) as f:
        table = json.load(f)
    trainable = sum(g['trainable'] for g in table['groups']
                    if g['group'] in (BACKBONE, ADAPTERS))
    backbone = table['denominators']['backbone']
    return dict(trainable_params=trainable, backbone_params=backbone,
                trainable_pct=100.0 * trainable / backbone)


def task_file(checkpoint: str, is_full: bool) -> str:
    """What a fine-tuned task adds to disk: the adapter-only checkpoint of
    a PEFT run; for Full, the whole model's weights (written here, weights
    only, beside the checkpoint)."""
    from ..engine.export import companion_paths
    if not is_full:
        return companion_paths(checkpoint)['adapters']
    from ..engine.checkpoint_io import load_file
    from ..engine.export import save_atomic
    path = re.sub(r'\.pth$', '_weights.pth', checkpoint)
    if not osp.exists(path):
        save_atomic(load_file(checkpoint)['state_dict'], path)
    return path


def write_source_weights(checkpoint: str, out: str,
                         backbone_only: bool) -> None:
    """The weights of a whole-model checkpoint, weights only: all of them
    (mmdet's Swin reads their ``backbone.`` keys), or the ``backbone.*``
    ones as a bare backbone state dict (what mmseg's VisionTransformer reads
    as its pretrained checkpoint)."""
    from ..engine.checkpoint_io import load_file
    from ..engine.export import save_atomic
    state = load_file(checkpoint)['state_dict']
    if backbone_only:
        state = {k[len('backbone.'):]: v for k, v in state.items()
                 if k.startswith('backbone.')}
    if not state:
        raise StepFailed(f'{checkpoint} has no backbone.* weights')
    save_atomic(dict(state_dict=state), out)


def deploy_pair(row: Row, checkpoint: str):
    """The config and checkpoint to evaluate: the merged deploy pair that
    AdapterMergeHook wrote, or the run's own for Full (nothing to merge)."""
    from ..engine.export import companion_paths
    if row.name == 'full':
        return row.config, checkpoint
    paths = companion_paths(checkpoint)
    for key in ('deploy_config', 'deploy'):
        if not osp.exists(paths[key]):
            raise StepFailed(f'{row.key}: {paths[key]} is missing; '
                             'AdapterMergeHook writes it beside every '
                             'checkpoint')
    return paths['deploy_config'], paths['deploy']
