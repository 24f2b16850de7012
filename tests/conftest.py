"""Session-wide setup: mmpeft registered, tiny datasets generated once."""
import pytest

import mmpeft  # noqa: F401  registers mmpeft classes; patches before mmrotate
from helpers import load_tool


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """Root of the generated COCO / ADE20K / VOC / DOTA datasets.

    Layout as written by tools/make_demo_data.py (``make_all``): 4 training
    and 2 validation images per dataset, 256 px wide.
    """
    root = str(tmp_path_factory.mktemp('demo_data'))
    load_tool('make_demo_data').make_all(
        root, num_train=4, num_val=2, img_size=256, seed=0)
    return root
