"""mixedae_mm.cli: configs by recipe name, and mixedae-knn's data config."""
import os.path as osp

import pytest

from mixedae_mm.cli import resolve_config
from mixedae_mm.cli.knn_eval import find_tool, with_data_config_resolved

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
    assert with_data_config_resolved(['cfg', 'ckpt']) == [
        'cfg', 'ckpt', '--data-config', LINEAR]
    assert with_data_config_resolved(
        ['cfg', 'ckpt', '--data-config', 'mixedae_vitb_linear-90e_in1k',
         '--k', '5']) == ['cfg', 'ckpt', '--data-config', LINEAR, '--k', '5']
    assert with_data_config_resolved(['c', 'k', '--data-config=d.py']) == [
        'c', 'k', '--data-config=d.py']
    assert with_data_config_resolved(['--help']) == ['--help']
    # from a clone, the tool is the clone's own
    assert find_tool('analysis_tools/knn_eval.py') == osp.join(
        ROOT, 'tools/analysis_tools/knn_eval.py')
