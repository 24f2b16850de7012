"""The comparison table: PEFT methods trained and evaluated on one task.

What a user chooses a method by, measured so that the differences mean
something on a noisy machine: the task metric of the merged (deploy) model
over several seeds (mean, spread, and the difference to full fine-tuning
and to the frozen backbone with a paired t-interval over seeds), the
trainable parameters as a percentage of the backbone (the PEFT papers' "% of
backbone"), the size of the file each fine-tuned task adds, the training
step time and peak memory and the merged model's inference latency, each as
a ratio to full fine-tuning on the same host, with the conditions each
training ran under.

Every run goes through the user-facing tools (``tools/train.py`` or
``tools/dist_train.sh``, ``tools/test.py``, ``tools/count_params.py``) in a
subprocess, so the table measures what a user would run, nothing private.
Each (method, seed) run's results are written to its own folder as soon as
they exist, so a re-run does only what is missing. ``tools/compare.py`` is
the command line.

Modules: :mod:`.plan` (which config each method runs), :mod:`.source` (step
1 of the demo, cached), :mod:`.steps` (the tool runs and what they leave),
:mod:`.runner` (the order of it all), :mod:`.stats` (spread and intervals
over seeds), :mod:`.report` (the table and plots), :mod:`.latency` (timing
the merged models).

A task is either

- ``demo``: the CPU transfer demo (step 1 trains the tiny backbones on the
  COCO-format shapes until their validation mAP stops improving, once;
  every method adapts them to a few images per class of the VOC-format set;
  configs in ``configs/demo/``), or
- a full fine-tuning baseline config: each method's config is the shipped
  ``configs/<method>/<task>.py`` when the baseline is one of
  ``configs/baselines/``, else it is generated from the baseline and the
  method's config base, keeping the baseline's pretrained weights.
"""
from .plan import (DEMO_BASE, DEMO_CONFIGS, DEMO_PRETRAIN, LABELS,
                   REFERENCES, ComparisonError, Plan, Pretrain, Row,
                   baseline_plan, data_identity, demo_data_error, demo_plan,
                   generated_config, host_of_backbone, hosts_of, label_of,
                   method_key, method_names, parse_methods,
                   validation_split_error)
from .report import markdown, plot, primary_metric, table_doc, write_outputs
from .runner import Comparison, Run, parse_cfg_options
from .source import ensure_source, source_key
from .stats import mean_std, paired_difference, pareto_front, t_quantile
from .steps import (StepFailed, read_json, step_stats, test_command, tool,
                    train_command, trainable_share)

__all__ = [
    'DEMO_BASE', 'DEMO_CONFIGS', 'DEMO_PRETRAIN', 'LABELS', 'REFERENCES',
    'Comparison', 'ComparisonError', 'Plan', 'Pretrain', 'Row', 'Run',
    'StepFailed', 'baseline_plan', 'data_identity', 'demo_data_error',
    'demo_plan', 'ensure_source', 'generated_config', 'host_of_backbone',
    'hosts_of', 'label_of', 'markdown', 'mean_std', 'method_key',
    'method_names', 'paired_difference', 'pareto_front', 'parse_cfg_options',
    'parse_methods', 'plot', 'primary_metric', 'read_json', 'source_key',
    'step_stats', 't_quantile', 'table_doc', 'test_command', 'tool',
    'train_command', 'trainable_share', 'validation_split_error',
    'write_outputs'
]
