"""The comparison table: PEFT methods trained and evaluated on one task.

What a user chooses a method by, measured in one run so that the ratios are
honest on a noisy machine: the task metric of the merged (deploy) model, the
trainable parameters as a percentage of the backbone (the PEFT papers' "% of
backbone"), the size of the file each fine-tuned task adds, the training step
time and peak memory and the merged model's inference latency, each as a
ratio to full fine-tuning on the same host.

Every run goes through the user-facing tools (``tools/train.py`` or
``tools/dist_train.sh``, ``tools/test.py``, ``tools/count_params.py``) in a
subprocess, so the table measures what a user would run, nothing private.
Each method's results are written to its own folder as soon as they exist,
so a re-run skips what is done. ``tools/compare.py`` is the command line.

Modules: :mod:`.plan` (which config each method runs), :mod:`.steps`
(the tool runs and what they leave), :mod:`.runner` (the order of it all),
:mod:`.report` (the table), :mod:`.latency` (timing the merged models).

A task is either

- ``demo``: the CPU transfer demo (step 1 pretrains the tiny backbones on the
  COCO-format shapes, every method fine-tunes on the VOC-format set, configs
  in ``configs/demo/``), or
- a full fine-tuning baseline config: each method's config is the shipped
  ``configs/<method>/<task>.py`` when the baseline is one of
  ``configs/baselines/``, else it is generated from the baseline and the
  method's config base, keeping the baseline's pretrained weights.
"""
from .plan import (ALL_METHODS, DEMO_BASE, DEMO_CONFIGS, DEMO_PRETRAIN,
                   LABELS, ComparisonError, Plan, Pretrain, Row,
                   baseline_plan, demo_plan, generated_config,
                   host_of_backbone, hosts_of, method_key, parse_methods)
from .report import markdown, plot, primary_metric, table_doc, write_outputs
from .runner import Comparison
from .steps import (StepFailed, step_stats, test_command, tool,
                    train_command, trainable_share)

__all__ = [
    'ALL_METHODS', 'DEMO_BASE', 'DEMO_CONFIGS', 'DEMO_PRETRAIN', 'LABELS',
    'Comparison', 'ComparisonError', 'Plan', 'Pretrain', 'Row', 'StepFailed',
    'baseline_plan', 'demo_plan', 'generated_config', 'host_of_backbone',
    'hosts_of', 'markdown', 'method_key', 'parse_methods', 'plot',
    'primary_metric', 'step_stats', 'table_doc', 'test_command', 'tool',
    'train_command', 'trainable_share', 'write_outputs'
]
