"""Print the detected stack and which mmpeft backbones / hooks are available.

The first thing a bug report needs: python, torch and CUDA, mmengine, mmcv
(and whether its compiled ops load), mmdet / mmseg / mmrotate, and for every
mmpeft name that needs one of them, whether it is registered or what to
install. Same as ``python -m mmpeft.env``.

Usage: ``python tools/env_info.py``
"""
from mmpeft.env import main

if __name__ == '__main__':
    main()
