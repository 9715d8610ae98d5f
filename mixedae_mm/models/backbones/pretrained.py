"""Verified loading of pretrained encoder weights into :class:`MixedAEViT`
(``init_cfg=dict(type='Pretrained', ...)``): a missing or misshapen
parameter is an error, not a warning."""
from typing import Optional

from mmengine.logging import MMLogger

from ...checkpoints import load_checkpoint_strict


class StrictPretrainedMixin:
    """``load_pretrained`` and what a transfer model may lack or leave
    unused of a pretraining checkpoint."""

    #: parameters a pretraining checkpoint does not have: created by
    #: transfer options, or (segment_embed) only used while pretraining
    NEW_IN_TRANSFER = (r'layers\.\d+\.attn\.relative_position_bias_table',
                       r'ln2\..*', r'segment_embed')
    #: checkpoint entries a transfer model may leave unused
    UNUSED_IN_TRANSFER = (r'segment_embed', r'ln1\..*')

    def _pretrained_cfg(self) -> Optional[dict]:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            return cfg
        return None

    def load_pretrained(self, checkpoint: str, prefix: str = '') -> dict:
        """Load encoder weights, verified.

        Args:
            checkpoint: path of a weights-only loadable file: a MixedAE
                pretraining checkpoint (``prefix='backbone.'``) or an
                extracted backbone (``prefix=''``).
            prefix: key prefix of the encoder in the checkpoint.

        Returns:
            ``dict(loaded=[...], new=[...], unused=[...],
            outside_prefix=[...])`` key lists (see
            :func:`mixedae_mm.checkpoints.load_state_dict_strict`).

        Raises:
            CheckpointMismatchError (a ``RuntimeError``): when a parameter
            the checkpoint should hold is missing or of another shape, or
            it holds encoder weights this model cannot use.
        """
        return load_checkpoint_strict(
            self, checkpoint, prefix=prefix,
            expect_missing=self.NEW_IN_TRANSFER,
            expect_unused=self.UNUSED_IN_TRANSFER,
            logger=MMLogger.get_current_instance())
