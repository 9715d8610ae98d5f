"""The encoder sizes :class:`MixedAEViT` knows by name (``arch='b'``...):
mmpretrain's ViT sizes plus the demo's and the small-scale study's, which
tests and the quick-start use (a name, so command-line overrides can pick
it)."""
from mmpretrain.models import VisionTransformer

ARCH_ZOO = {
    **VisionTransformer.arch_zoo,
    'demo-tiny':
    dict(embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768),
    # the small-scale study's encoder (configs/study/, docs/results.md),
    # by name for tools/analysis_tools/benchmark_vs_mae.py
    'study-tiny':
    dict(embed_dims=128, num_layers=8, num_heads=4, feedforward_channels=512),
}
