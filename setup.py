from setuptools import find_packages, setup

setup(
    name='mmpeft',
    version='0.1.0',
    description='Parameter-efficient fine-tuning of vision backbones for '
    'OpenMMLab detection and segmentation (Mona, RepAdapter, MiMi).',
    packages=find_packages(include=['mmpeft', 'mmpeft.*']),
    python_requires='>=3.9',
    # The mm stack is pinned and installed by scripts/setup.sh (mmcv needs a
    # source build); nothing is declared here so `pip install -e .` never
    # pulls a different torch or mmcv.
    install_requires=[],
)
