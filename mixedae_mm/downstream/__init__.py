"""Registrations for mmsegmentation and mmdetection.

Imported only by transfer configs, e.g.
``custom_imports=dict(imports=['mixedae_mm.downstream.mmseg'])``, so that
``import mixedae_mm`` never imports mmseg or mmdet.
"""
import importlib

#: the module that registers mixedae_mm's classes in each codebase
REGISTRATIONS = {
    'mmpretrain': 'mixedae_mm',
    'mmseg': 'mixedae_mm.downstream.mmseg',
    'mmdet': 'mixedae_mm.downstream.mmdet',
}


def register_in(models, hooks, transforms) -> None:
    """Register what transfer configs use in another codebase's registries:
    the backbone, the hooks of every recipe (durable, weights-only loadable
    checkpoints, exact resumes, non-finite steps caught, the config's
    schedule on resume, TF32, the batch/lr report, a checkpoint on SIGTERM)
    and the image loader that names unreadable files (mmpretrain's
    registries, where they live, are not searched from mmseg or mmdet
    scope)."""
    from mixedae_mm.datasets import (CheckedLoadImageFromFile,
                                     UnreadableImageReportHook)
    from mixedae_mm.engine import (BatchLRReportHook, ConfigScheduleHook,
                                   DurableCheckpointHook, NonFiniteGuardHook,
                                   PreemptionHook, StepSeedHook, TF32Hook,
                                   WeightsOnlyCheckpointHook)
    from mixedae_mm.models.backbones import MixedAEViT
    models.register_module(name='MixedAEViT', module=MixedAEViT)
    for hook in (DurableCheckpointHook, WeightsOnlyCheckpointHook,
                 StepSeedHook, NonFiniteGuardHook, ConfigScheduleHook,
                 UnreadableImageReportHook, TF32Hook, BatchLRReportHook,
                 PreemptionHook):
        hooks.register_module(module=hook)
    transforms.register_module(module=CheckedLoadImageFromFile)
    # this codebase's inferencer modules may have been imported after
    # mixedae_mm: make their loaders strict for our models too
    from mixedae_mm.apis import install_strict_loading
    install_strict_loading()


def build_model(model_cfg: dict, scope: str):
    """Build a config's ``model`` in the registry of codebase ``scope`` (a
    config's ``default_scope``), without leaving that scope as the global
    default (scripts and tests then build from several codebases in one
    process)."""
    from mmengine.registry import DefaultScope
    if scope not in REGISTRATIONS:
        raise ValueError(f'default_scope {scope!r} is not one of '
                         f'{sorted(REGISTRATIONS)}')
    importlib.import_module(REGISTRATIONS[scope])
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(model_cfg)
