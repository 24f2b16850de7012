"""Which host packages (mmdet, mmseg, mmrotate, mmpretrain) are installed,
what mmpeft registers with them, and the stack report for bug reports.

A module of mmpeft that subclasses a host package's class (the Swin backbones
need mmdet, the ViT backbones mmseg, the DINOv2 / EVA-02 / SAM ones
mmpretrain) is imported only when that package imports. Otherwise each name it would register gets a placeholder under the
same name, so that a config naming it fails with one line that names the
package and the pip command, instead of ``import mmpeft`` failing for every
config. ``python -m mmpeft.env`` (or ``tools/env_info.py``) prints the report.
"""
import importlib
import platform
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

# Host package -> (distribution name, pip requirement within the tested range).
HOSTS = {
    'mmdet': ('mmdet', 'mmdet>=3.1.0,<3.4.0'),
    'mmseg': ('mmsegmentation', 'mmsegmentation>=1.2.2,<1.3.0'),
    'mmrotate': ('mmrotate', 'mmrotate==1.0.0rc1'),
    'mmpretrain': ('mmpretrain', 'mmpretrain>=1.2.0,<1.3.0'),
}


class MissingHostError(ImportError):
    """A registered mmpeft name was built whose host package is missing."""


@dataclass
class OptionalModule:
    """An mmpeft module that imports host packages, and what it registers.

    Args:
        module: dotted module path, e.g. ``'mmpeft.models.swin'``.
        requires: host packages it imports (keys of :data:`HOSTS`).
        registry: the mmengine root registry it registers into (``'MODELS'``,
            ``'HOOKS'``, ...).
        names: the names it registers there (placeholders when missing).
    """
    module: str
    requires: Sequence[str]
    registry: str
    names: Sequence[str]


_host_status: Dict[str, Optional[str]] = {}  # package -> None (ok) or reason
_registered: List[OptionalModule] = []


def host_problem(package: str) -> Optional[str]:
    """``None`` if ``package`` imports, else why not (cached)."""
    if package not in _host_status:
        try:
            importlib.import_module(package)
            _host_status[package] = None
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.split('.')[0] == package:
                _host_status[package] = 'is not installed'
            else:
                _host_status[package] = f'fails to import ({e})'
        except Exception as e:  # e.g. mmdet's assert on the mmcv version
            _host_status[package] = (
                f'fails to import ({type(e).__name__}: {e})')
    return _host_status[package]


def install_hint(packages: Sequence[str]) -> str:
    """The pip command that adds ``packages`` without touching torch / mmcv."""
    reqs = ' '.join(f'"{HOSTS[p][1]}"' for p in packages)
    return f'pip install {reqs}'


def missing_message(name: str, packages: Sequence[str]) -> str:
    """One line: which name needs which missing package, and the fix."""
    reasons = '; '.join(f'{HOSTS[p][0]} {host_problem(p)}' for p in packages)
    return (f'{name} needs {" and ".join(HOSTS[p][0] for p in packages)}: '
            f'{reasons}. Install it with: {install_hint(packages)}')


def _placeholder(name: str, packages: Sequence[str]):
    """A callable registered as ``name`` whose construction raises the fix."""

    def build(*args, **kwargs):
        raise MissingHostError(missing_message(name, packages))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'Placeholder: {missing_message(name, packages)}'
    build.mmpeft_missing = tuple(packages)
    return build


def import_optional(specs: Sequence[OptionalModule]) -> Dict[str, object]:
    """Import each spec's module if its hosts import, else register
    placeholders. Returns the names imported (for ``from ... import``)."""
    from mmengine import registry as registries

    found = {}
    for spec in specs:
        if spec not in _registered:
            _registered.append(spec)
        missing = [p for p in spec.requires if host_problem(p) is not None]
        if not missing:
            module = importlib.import_module(spec.module)
            found.update({n: getattr(module, n) for n in spec.names
                          if hasattr(module, n)})
            continue
        registry = getattr(registries, spec.registry)
        for name in spec.names:
            if name not in registry.module_dict:
                registry.register_module(
                    name=name, module=_placeholder(name, missing))
    return found


def missing_host(registry: str, name: str) -> Optional[str]:
    """The one-line message if ``name`` in mmengine's root ``registry`` is
    a placeholder for a missing host, else ``None``."""
    for spec in _registered:
        if spec.registry == registry and name in spec.names:
            missing = [p for p in spec.requires if host_problem(p) is not None]
            if missing:
                return missing_message(name, missing)
    return None


def availability() -> List[tuple]:
    """(registry, name, 'available' or the missing message) for every
    optional name mmpeft registers."""
    rows = []
    for spec in _registered:
        missing = [p for p in spec.requires if host_problem(p) is not None]
        for name in spec.names:
            rows.append((spec.registry, name, 'available' if not missing
                         else missing_message(name, missing)))
    return rows


def _version(package: str) -> str:
    try:
        return importlib.import_module(package).__version__
    except Exception as e:  # a report must not fail on a broken package
        return f'not importable ({type(e).__name__}: {e})'.splitlines()[0]


def _mmcv_ops() -> str:
    try:
        from mmcv.ops import nms  # noqa: F401  needs the compiled mmcv._ext
        return 'built'
    except Exception as e:
        return f'missing ({type(e).__name__}: {e})'.splitlines()[0]


def _torchvision() -> str:
    from .compat import torchvision_problem
    problem = torchvision_problem()
    if problem is None:
        return _version('torchvision')
    return (f'not importable ({problem}); mmpretrain imports with the '
            'stand-ins of mmpeft/compat.py')


def report() -> str:
    """The detected stack and what mmpeft registered, one item a line."""
    import mmpeft  # noqa: F401  registers everything first
    import torch

    if torch.cuda.is_available():
        cuda = (f'{torch.version.cuda} ({torch.cuda.device_count()} '
                'device(s) visible)')
    elif torch.version.cuda is None:
        cuda = 'none (CPU-only torch build)'
    else:
        cuda = f'not available (torch built for CUDA {torch.version.cuda})'
    lines = [
        f'python: {platform.python_version()} ({sys.executable})',
        f'platform: {platform.platform()}',
        f'torch: {torch.__version__}; CUDA: {cuda}',
        f'mmengine: {_version("mmengine")}',
        f'mmcv: {_version("mmcv")}; ops: {_mmcv_ops()}',
        f'torchvision: {_torchvision()}',
    ]
    for package, (dist, _) in HOSTS.items():
        problem = host_problem(package)
        lines.append(f'{dist}: ' + (_version(package) if problem is None
                                    else problem))
    lines.append(f'mmpeft: {mmpeft.__version__} ({mmpeft.__file__})')
    from mmengine.registry import HOOKS, MODELS
    optional = {(r, n) for r, n, _ in availability()}
    always = []
    for registry_name, registry in (('MODELS', MODELS), ('HOOKS', HOOKS)):
        for name, cls in registry.module_dict.items():
            if (getattr(cls, '__module__', '').startswith('mmpeft.')
                    and (registry_name, name) not in optional):
                always.append(f'{registry_name}.{name}')
    lines.append('registered (need only mmengine): ' +
                 ', '.join(sorted(always)))
    for registry, name, status in availability():
        lines.append(f'{registry}.{name}: {status}')
    return '\n'.join(lines)


def main() -> None:
    print(report())


if __name__ == '__main__':
    main()
