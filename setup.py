"""mmpeft's package metadata.

``pip install -e .`` into an existing OpenMMLab 2.0 environment adds only
what is missing: torch and mmcv are declared as ranges that any supported
install satisfies (pip never replaces an installed torch or mmcv that is in
range; mmcv needs a source build with ops, see scripts/setup.sh), and each
downstream codebase is an extra: ``pip install -e ".[mmdet]"``, ``[mmseg]``,
``[mmrotate]``, ``[mmpretrain]`` (the DINOv2 / EVA-02 / SAM hosts), ``[all]``
(mmrotate 1.0.0rc1 caps mmdet at 3.1.x). The ranges are those of the two
tested stacks (README "Support matrix").
"""
import os.path as osp
import re

from setuptools import find_packages, setup


def version() -> str:
    with open(osp.join(osp.dirname(osp.abspath(__file__)), 'mmpeft',
                       '__init__.py')) as f:
        return re.search(r"^__version__ = '([^']+)'", f.read(), re.M).group(1)


EXTRAS = {
    'mmdet': ['mmdet>=3.1.0,<3.4.0'],
    'mmseg': ['mmsegmentation>=1.2.2,<1.3.0', 'ftfy', 'regex'],
    'mmrotate': ['mmrotate==1.0.0rc1', 'mmdet>=3.1.0,<3.2.0'],
    'mmpretrain': ['mmpretrain>=1.2.0,<1.3.0'],
    'tests': ['pytest', 'pycocotools', 'scipy', 'shapely', 'terminaltables'],
}
# pip intersects the two mmdet ranges: mmdet 3.1.x.
EXTRAS['all'] = sorted({
    r for k in ('mmdet', 'mmseg', 'mmrotate', 'mmpretrain')
    for r in EXTRAS[k]})

setup(
    name='mmpeft',
    version=version(),
    description='Parameter-efficient fine-tuning of vision backbones for '
    'OpenMMLab detection and segmentation (Mona, RepAdapter, MiMi).',
    packages=find_packages(include=['mmpeft', 'mmpeft.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.0',
        'mmcv>=2.0.1,<2.2.0',
        'mmengine>=0.10.0,<1.0.0',
        'numpy',
    ],
    extras_require=EXTRAS,
)
