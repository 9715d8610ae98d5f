"""mixedae_mm.cli: configs by recipe name, and mixedae-knn's data config."""
import os.path as osp

import pytest

from mixedae_mm.cli import resolve_config
from mixedae_mm.cli.knn_eval import parse_args

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LINEAR = osp.join(ROOT, 'configs/finetune/mixedae_vitb_linear-90e_in1k.py')


def test_a_recipe_name_gives_its_shipped_config():
    assert resolve_config('mixedae_vit-tiny-p8_demo') == osp.join(
        ROOT, 'configs/demo/mixedae_vit-tiny-p8_demo.py')
    # a path stays a path, existing or not (mmengine names a missing one)
    assert resolve_config('my/config.py') == 'my/config.py'
    with pytest.raises(SystemExit, match='mixedae_vitb_16OOe: neither a '
                       'config file nor a recipe name'):
        resolve_config('mixedae_vitb_16OOe')


def test_knn_command_defaults_to_the_shipped_linear_probe_data_config():
    """mixedae-knn and tools/analysis_tools/knn_eval.py are one command:
    its --data-config is a config file or a recipe's name, by default the
    linear-probe recipe's shipped config, wherever it runs from."""
    def data_config(*argv):
        return resolve_config(parse_args(['cfg', 'ckpt', *argv]).data_config)

    assert data_config() == LINEAR
    assert data_config('--data-config', 'mixedae_vitb_linear-90e_in1k',
                       '--k', '5') == LINEAR
    assert data_config('--data-config=d.py') == 'd.py'
