"""The command-line tools, installed with the package as console commands.

=============================  =============================================
command                        the same as, in a clone
=============================  =============================================
``mixedae-train``              ``python tools/train.py``
``mixedae-test``               ``python tools/test.py``
``mixedae-knn``                ``python tools/analysis_tools/knn_eval.py``
``mixedae-vis-reconstruction`` ``python tools/visualization/vis_reconstruction.py``
``mixedae-vis-attention``      ``python tools/visualization/vis_homologous_attention.py``
``mixedae-demo-data``          ``python tools/dataset_converters/build_demo_data.py``
=============================  =============================================

Where a tool takes a config, it also takes a recipe's name (the config
file's name without ``.py``, as ``mmpretrain.list_models('*mixedae*')``
lists them): the config shipped inside the package is used.
"""
import os
import os.path as osp


def parse_with_launcher(parser, argv=None):
    """Add the launcher arguments train and test share (mmpretrain's
    ``--launcher`` and the ``--local_rank`` old launchers pass), parse, and
    export ``LOCAL_RANK`` when the launcher did not."""
    from ..cli_args import non_negative_int
    parser.add_argument('--launcher',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank',
                        type=non_negative_int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def pretraining_config_refusal(cfg, config: str) -> str:
    """The one-line error for a config whose model is not MixedAE
    pretraining (a fine-tune, linear-probe, segmentation or detection
    config), for tools that mix images; '' for a MixedAE config."""
    model_type = str((cfg.get('model') or {}).get('type', ''))
    if model_type.split('.')[-1] == 'MixedAE':
        return ''
    return (f'{config} is not a MixedAE pretraining config (its model is '
            f'{model_type or "not set"}): give a pretraining config, e.g. '
            'configs/mixedae_vitb_1600e.py')


def resolve_config(config: str) -> str:
    """The path of ``config``: a config file, or the name of a recipe
    (``mixedae_vit-tiny-p8_demo``), whose config ships in the package."""
    if osp.isfile(config) or osp.splitext(config)[1] == '.py':
        return config  # a path (a missing file is reported by mmengine)
    import mixedae_mm  # noqa: F401 (registers the recipes by name)
    from mmpretrain.apis.model import ModelHub
    try:
        return ModelHub.get(config).config.filename
    except ValueError:
        raise SystemExit(
            f'{config}: neither a config file nor a recipe name; the names '
            "are those of mmpretrain.list_models('*mixedae*')") from None
