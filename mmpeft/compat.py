"""Workarounds for upstream bugs. This is the only module that patches third-party code.

Each shim names the upstream bug it works around; ``apply()`` is idempotent and
runs on ``import mmpeft`` before anything imports the affected package.
"""
import collections
import collections.abc


def _alias_collections_abc() -> None:
    """mmrotate 1.0.0rc1 does ``from collections import Sequence``.

    The ABC aliases were removed from ``collections`` in Python 3.10; mmrotate
    1.0.0rc1 still imports one in ``mmrotate/models/detectors/
    refine_single_stage.py``, so ``import mmrotate.models`` fails without this.
    """
    if not hasattr(collections, 'Sequence'):
        collections.Sequence = collections.abc.Sequence


def apply() -> None:
    _alias_collections_abc()
