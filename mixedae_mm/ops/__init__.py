"""The method as pure tensor functions, one file per concept:

- :mod:`.mixing`: the ``owner`` partition, mixing, un-mixing, the
  reconstruction mask (and MAE's random masking, for the ablation);
- :mod:`.homologous`: what comes from one source image: which keys a patch
  query keeps (top-k, ties to the lower position) and attention over them,
  written out (the readable path and the reference), homologous accuracy,
  the homologous contrastive loss;
- :mod:`.fast`: the same attention, fast (``topk_attention``): int32
  ranking keys, a C kernel on the CPU, a fused kernel elsewhere.

They need only torch. The registered classes in ``mixedae_mm.models`` are
thin wrappers around them; ``docs/architecture.md`` follows a training step
through both.

Shape glossary used in every docstring:

- ``B``  images in the batch (per rank)
- ``G``  mixing group size (``1 / mixing_ratio``; 4 in the paper)
- ``M``  mixed samples, ``M = B // G``
- ``N``  patches per image, ``K = N // G`` patches owned by each image
- ``L``  tokens of a sequence including the cls token, ``L = N + 1``
- ``h``  attention heads

Image ``g`` of group ``m`` is batch element ``b = m * G + g``: groups are
consecutive images, which the shuffling sampler makes a random grouping.
"""
from .fast import topk_attention
from .fast.selection import (ordered_int32_keys, select_topk_keys,
                             topk_attention_mask, topk_select,
                             topk_select_with_scores)
from .homologous import (TopKAttention, attention_over_keys,
                         attention_scores_fp32, homologous_accuracy,
                         homologous_accuracy_chance,
                         homologous_contrastive_loss, homologous_target,
                         topk_attention_reference, topk_keep_mask,
                         topk_select_reference)
from .mixing import (check_mixing_shapes, mix_images, mix_tokens,
                     random_masking, reconstruction_mask, sample_partition,
                     unmix_tokens)

__all__ = [
    'TopKAttention', 'attention_over_keys', 'attention_scores_fp32', 'check_mixing_shapes',
    'homologous_accuracy', 'homologous_accuracy_chance',
    'homologous_contrastive_loss', 'homologous_target', 'mix_images',
    'mix_tokens', 'ordered_int32_keys', 'random_masking',
    'reconstruction_mask', 'sample_partition', 'select_topk_keys',
    'topk_attention', 'topk_attention_mask', 'topk_attention_reference',
    'topk_keep_mask', 'topk_select', 'topk_select_reference',
    'topk_select_with_scores', 'unmix_tokens'
]
