"""The doors mmpretrain users already use: ``list_models``/``get_model``
know our recipes by name, the inferencers find a pipeline in our
pretraining configs, and the checkpoint they load into one of our models
must fit it (:func:`install_strict_loading`).
"""
import copy
import importlib
import os.path as osp
import re
import sys
import warnings

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))


def find_model_index():
    """``(model-index.yml, the folder its config paths are relative to)``:
    shipped inside the package (``mixedae_mm/.mim``, a built wheel) or at
    the root of the clone the package is imported from (editable install)."""
    for root in (osp.join(PACKAGE_DIR, '.mim'), osp.dirname(PACKAGE_DIR)):
        path = osp.join(root, 'model-index.yml')
        if osp.isfile(path):
            return path, root
    raise FileNotFoundError(
        f'model-index.yml not found in {PACKAGE_DIR}/.mim nor next to the '
        'package: reinstall mixedae_mm from a clone (pip install -e . or a '
        'wheel built from it)')


def register_model_index():
    """Registers our recipes with mmpretrain's ``ModelHub`` (names are the
    config file names, e.g. ``mixedae_vitb_1600e``), with absolute config
    and published-weight paths, so ``get_model(name)`` (and
    ``pretrained=True``, offline) works from any working directory."""
    from mmpretrain.apis.model import ModelHub
    try:
        path, root = find_model_index()
    except FileNotFoundError as error:
        # the modules work without it: training from a config file needs
        # no name
        warnings.warn(f'{error}; mmpretrain.get_model will not know '
                      'mixedae_mm recipes by name')
        return
    before = set(ModelHub._models_dict)
    ModelHub.register_model_index(path, config_prefix=root)
    for name in set(ModelHub._models_dict) - before:
        metainfo = ModelHub._models_dict[name]
        weights = metainfo.weights
        # weights shipped in the repository are named relative to it
        if weights and '://' not in weights and not osp.isabs(weights):
            metainfo.weights = osp.join(root, weights)


def with_test_pipeline(config):
    """The config mmpretrain's inferencers need, made from a pretraining
    config.

    The inferencers (``FeatureExtractor``, ``ImageClassificationInferencer``)
    read their pipeline from ``config.test_dataloader.dataset.pipeline``. A
    pretraining config cannot have a ``test_dataloader``: mmengine's Runner
    would then require ``test_cfg`` and ``test_evaluator`` as well, and
    there is nothing to evaluate. So pretraining configs state a top-level
    ``test_pipeline``, and this returns a copy of ``config`` whose
    ``test_dataloader`` holds just that pipeline. Any other config comes
    back unchanged.
    """
    if (config is None or 'test_dataloader' in config
            or not config.get('test_pipeline')):
        return config
    config = copy.deepcopy(config)
    config.test_dataloader = dict(
        dataset=dict(pipeline=copy.deepcopy(config.test_pipeline)))
    return config


#: Where OpenMMLab loads a checkpoint into a built model for use: module
#: and name of the loader it calls. ``mmengine.runner.load_checkpoint`` is
#: what ``mmpretrain.get_model`` imports at each call (and mmseg's
#: ``init_model``, mmdet's ``init_detector`` when imported after us); the
#: others were bound at import time. None of their for-use callers passes
#: ``strict``. Training-time loading is left alone: ``load_from`` and
#: ``--resume`` go through the Runner's own binding, ``init_cfg``
#: ``Pretrained`` passes ``strict=False`` (our backbone verifies its own
#: ``init_cfg``).
FOR_USE_LOADERS = (
    # at the source first: a module imported later (mmseg's and mmdet's
    # inferencers are imported on first use) binds the strict version
    ('mmengine.runner.checkpoint', 'load_checkpoint'),
    ('mmengine.runner.checkpoint', '_load_checkpoint_to_model'),
    ('mmengine.runner', 'load_checkpoint'),
    ('mmpretrain.apis.base', 'load_checkpoint'),
    ('mmseg.apis.inference', 'load_checkpoint'),
    ('mmdet.apis.inference', 'load_checkpoint'),
    ('mmengine.infer.infer', '_load_checkpoint_to_model'),
    ('mmseg.apis.mmseg_inferencer', '_load_checkpoint_to_model'),
    ('mmdet.apis.det_inferencer', '_load_checkpoint_to_model'),
)


def is_ours(model) -> bool:
    """Whether ``model`` holds a module of this package (any of our
    recipes: MixedAE, or a classifier/segmentor/detector on MixedAEViT)."""
    return any(type(m).__module__.startswith(__package__ + '.')
               for m in model.modules())


def load_to_model_strict(model, checkpoint: dict, source: str,
                         revise_keys=((r'^module\.', ''), )) -> dict:
    """mmengine's ``_load_checkpoint_to_model`` made strict: every tensor
    of ``model`` (unwrapped from DDP) must come from ``checkpoint`` by name
    and shape, and every checkpoint tensor must be used
    (:func:`mixedae_mm.checkpoints.load_state_dict_strict`). Returns
    ``checkpoint``."""
    from mmengine.logging import MMLogger
    from mmengine.model import is_model_wrapper

    from .checkpoints import load_state_dict_strict, state_dict_of
    if is_model_wrapper(model):
        model = model.module
    state = state_dict_of(checkpoint, source)
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    load_state_dict_strict(model, state, source=source,
                           logger=MMLogger.get_current_instance())
    return checkpoint


def load_checkpoint_for_use(model, filename: str, map_location=None,
                            logger=None,
                            revise_keys=((r'^module\.', ''), )) -> dict:
    """Read ``filename`` as mmengine does (local paths weights-only, see
    :mod:`mixedae_mm.engine.fileio`; URLs) and load it with
    :func:`load_to_model_strict`. Returns the checkpoint (its ``meta``
    carries e.g. ``dataset_meta``)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from .checkpoints import CheckpointError
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location,
                                                  logger)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{filename}: holds a '
                              f'{type(checkpoint).__name__}, not a dict of '
                              'tensors')
    return load_to_model_strict(model, checkpoint, str(filename),
                                revise_keys)


#: ``strict`` not given: the callers of ``FOR_USE_LOADERS`` that load for
#: use pass none, those that mean a partial load (mmengine's
#: ``PretrainedInit``) pass ``strict=False``
_NOT_GIVEN = object()


def _strict_for_ours(original, name: str):
    """``original`` (one of ``FOR_USE_LOADERS``) made strict for our models
    when the caller does not choose ``strict`` itself; otherwise
    ``original`` as it was."""

    def lenient(model, strict) -> bool:
        return strict is not _NOT_GIVEN or not is_ours(model)

    if name == 'load_checkpoint':

        def load_checkpoint(model, filename, map_location=None,
                            strict=_NOT_GIVEN, logger=None,
                            revise_keys=[(r'^module\.', '')]):
            if lenient(model, strict):
                return original(model, filename, map_location,
                                strict is True, logger, revise_keys)
            return load_checkpoint_for_use(model, filename, map_location,
                                           logger, revise_keys)

        loader = load_checkpoint
    else:

        def _load_checkpoint_to_model(model, checkpoint, strict=_NOT_GIVEN,
                                      logger=None,
                                      revise_keys=[(r'^module\.', '')]):
            if lenient(model, strict):
                return original(model, checkpoint, strict is True, logger,
                                revise_keys)
            return load_to_model_strict(model, checkpoint,
                                        'the checkpoint given', revise_keys)

        loader = _load_checkpoint_to_model
    loader.__wrapped__ = original
    loader.strict_for_mixedae_mm = True
    return loader


def install_strict_loading() -> None:
    """Make every loader of ``FOR_USE_LOADERS`` whose module is imported
    refuse a checkpoint that does not fit one of our models (mmengine's
    loaders log the mismatch and leave the unmatched tensors random),
    unless its caller passes ``strict`` itself (``strict=False``: a partial
    load is meant, as in ``init_cfg=dict(type='Pretrained')``).
    Idempotent; ``import mixedae_mm`` calls it, and so do
    ``mixedae_mm.downstream.mmseg``/``mmdet``, which transfer configs
    import once those codebases' inferencers are loaded."""
    for module_name, name in FOR_USE_LOADERS:
        module = sys.modules.get(module_name)
        if module is None and module_name.startswith('mmengine.'):
            module = importlib.import_module(module_name)
        original = getattr(module, name, None) if module else None
        if original is None or getattr(original, 'strict_for_mixedae_mm',
                                       False):
            continue
        setattr(module, name, _strict_for_ours(original, name))
