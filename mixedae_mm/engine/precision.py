"""TF32 for the fp32 work of a recipe on GPUs that have it."""
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class TF32Hook(Hook):
    """Run the fp32 work of a mixed-precision recipe (what bf16 autocast
    leaves in fp32, and every matmul of a run without AMP) on TF32 tensor
    cores where the GPU has them (Ampere and newer).

    PyTorch leaves TF32 matmuls off by default; convolutions through cuDNN
    have it on by default, set here too so that the recipe does not depend on
    a default. The previous values are restored when the run ends, so a
    process that trains and then does something else gets its own settings
    back. On a machine without CUDA nothing is changed (the flags do not
    touch CPU kernels, and CPU tests keep exact fp32 arithmetic).
    """
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._previous: Optional[tuple] = None

    def before_run(self, runner) -> None:
        import torch
        if not torch.cuda.is_available():
            return
        self._previous = (torch.backends.cuda.matmul.allow_tf32,
                          torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        runner.logger.info('TF32 on for fp32 matmuls and convolutions')

    def after_run(self, runner) -> None:
        import torch
        if self._previous is None:
            return
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = self._previous
        self._previous = None
