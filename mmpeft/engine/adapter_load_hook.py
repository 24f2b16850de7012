"""Load an adapter-only checkpoint on top of the base checkpoint a run loads.

``tools/test.py CONFIG BASE_CKPT --adapter ADAPTERS`` adds this hook: the
runner loads ``BASE_CKPT`` (its ``load_from``) as usual, and at
``after_load_checkpoint`` (the file is read but not yet in the model) the
hook checks that the base holds exactly the frozen weights the adapters
were trained on and puts the adapter tensors into the loaded state dict. One
frozen base, many small task files.
"""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .export import apply_adapter_checkpoint
from .param_table import unwrap_model


@HOOKS.register_module()
class AdapterLoadHook(Hook):
    """Args:
        checkpoint: the adapter-only checkpoint (``*_adapters.pth``).

    For test / val runs: in a training run it would also overwrite the
    adapters of a resumed checkpoint.
    """
    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint
        self.loaded = False

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = apply_adapter_checkpoint(unwrap_model(runner.model), checkpoint,
                                        self.checkpoint)
        self.loaded = True
        runner.logger.info(
            f'AdapterLoadHook: {self.checkpoint} ({info["backbone_type"]}, '
            f'{len(info["base"]["frozen_keys"])} frozen tensors from the base '
            'checkpoint verified) goes on top of the base checkpoint.')

    def before_test(self, runner) -> None:
        self._check_loaded()

    def before_val(self, runner) -> None:
        self._check_loaded()

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise RuntimeError(
                f'AdapterLoadHook: {self.checkpoint} needs a base checkpoint '
                'to go on top of, and none was loaded: set load_from (the '
                'CHECKPOINT argument of tools/test.py).')
