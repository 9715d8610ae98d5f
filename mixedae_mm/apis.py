"""The doors mmpretrain users already use: ``list_models``/``get_model``
know our recipes by name, and the inferencers find a pipeline in our
pretraining configs.
"""
import copy
import os.path as osp
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
    paths, so ``get_model(name)`` works from any working directory."""
    from mmpretrain.apis.model import ModelHub
    try:
        path, root = find_model_index()
    except FileNotFoundError as error:
        # the modules work without it: training from a config file needs
        # no name
        warnings.warn(f'{error}; mmpretrain.get_model will not know '
                      'mixedae_mm recipes by name')
        return
    ModelHub.register_model_index(path, config_prefix=root)


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
