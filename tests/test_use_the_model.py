"""The doors mmpretrain / mmseg / mmdet users already use, on our configs:
``list_models``/``get_model`` by name, ``FeatureExtractor`` on pretraining
configs, and each codebase's inferencer on a real photo."""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from mmengine.config import Config
from builders import recipe_configs
from conftest import IN_PROCESS_LOADING, load_tool, readme_sentences

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'


def run_fresh(code, cwd):
    """``code`` in a new interpreter (registration is an import side
    effect) importing this clone; returns what it printed last, as JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def photo():
    """A real photograph (scikit-image ships it), BGR as mmcv reads it."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[..., ::-1])


@pytest.mark.slow
def test_model_index_lists_every_recipe_and_builds_it(tmp_path):
    """From another working directory, ``import mixedae_mm`` is all it takes
    for ``list_models()`` to name every recipe config (our index's names) and
    ``get_model(name)`` to build it at full size: MixedAE in mmpretrain,
    Mask R-CNN and UperNet through mmdet's / mmseg's registries. Built on
    the meta device: every module at its full shape, no memory, no weight
    initialisation (the builds took 5.8 s instead of 27.2 s on this 2-core
    machine; full-size steps are in test_scale.py and test_launch.py)."""
    built = run_fresh(
        'import json, torch, mixedae_mm\n'
        'from mmpretrain import get_model, list_models\n'
        'from mmpretrain.apis.model import ModelHub\n'
        'out = {}\n'
        f'for name in [n for n in list_models() if ModelHub._models_dict[\n'
        f'        n].config.startswith({ROOT!r})]:\n'
        '    with torch.device("meta"):\n'
        '        model = get_model(name)\n'
        '    out[name] = dict(type=type(model).__name__,\n'
        '        width=model.backbone.embed_dims,\n'
        '        config=ModelHub.get(name).config.filename)\n'
        'print(json.dumps(out))\n', cwd=str(tmp_path))
    configs = {osp.relpath(v['config'], ROOT): k for k, v in built.items()}
    assert sorted(configs) == recipe_configs()
    for config, name in configs.items():
        # a recipe is known by its config file's name
        assert name == osp.splitext(osp.basename(config))[0]
        expected = {'configs/det': 'MaskRCNN',
                    'configs/seg': 'EncoderDecoder',
                    'configs/finetune': 'ImageClassifier'}.get(
                        osp.dirname(config), 'MixedAE')
        if name.startswith('mae-ours'):  # the MAE ablation's own class
            expected = 'MAEAblation'
        assert built[name]['type'] == expected, name
        width = next((w for key, w in (('demo', 192), ('study', 128),
                                       ('_vitl_', 1024),
                                       ('_vith-', 1280)) if key in name), 768)
        assert built[name]['width'] == width, name


def test_metafiles_label_every_number_and_weights_exist():
    """Paper numbers say so; only the study encoders have weights, files
    in weights/study/ named after their sha256 (as publish_model.py
    writes them), with numbers measured on those files."""
    import hashlib
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    entries = []
    for metafile in index['Import']:
        entries += yaml.safe_load(open(osp.join(ROOT, metafile)))['Models']
    assert sorted(e['Config'] for e in entries) == recipe_configs()
    for entry in entries:
        assert osp.isfile(osp.join(ROOT, entry['Config']))
        study = osp.dirname(entry['Config']) == 'configs/study'
        assert (entry['Weights'] is not None) == study, entry['Name']
        if study:
            weights = osp.join(ROOT, entry['Weights'])
            digest = hashlib.sha256(open(weights, 'rb').read()).hexdigest()
            assert weights.endswith(f'-{digest[:8]}.pth')
            assert 'measured' in entry['Metadata']['Results From']
            continue
        # pretraining recipes have no task of their own (as MAE's entries)
        pretraining = osp.dirname(entry['Config']) in (
            'configs', 'configs/demo', 'configs/fsdp')
        assert (entry['Results'] is None) == pretraining, entry['Name']
        for result in entry['Results'] or []:
            if 'Metrics' in result:
                assert 'paper' in entry['Metadata']['Results From']
    results = {e['Name']: e['Results'][0]['Metrics'] for e in entries
               if e['Results'] and 'Metrics' in e['Results'][0]
               and 'study' not in e['Config']}
    assert results == {
        'mixedae_vitb_ft-100e_in1k': {'Top 1 Accuracy': 83.9},
        'mixedae_vitb_upernet-160k_ade20k-512': {'mIoU': 48.7}}



def test_readme_code_pointers_name_the_files_that_hold_the_step():
    """The README's "In code, open first" sentence: the files it names
    exist, and each holds what the sentence says (the step; the encoder
    and its homologous attention; the pure mixing and homologous
    functions)."""
    import re

    from mixedae_mm import ops
    from mixedae_mm.models.backbones import (HomologousAttention,
                                             MixedAEEncoderLayer, MixedAEViT)
    from mixedae_mm.models.selfsup.mixedae import MixedAE
    readme = readme_sentences()
    start = readme.index('In code, open first')
    sentence = readme[start:readme.index('runs the readable attention', start)]
    named = re.findall(r'`([\w/]+\.py)`', sentence)
    assert named == ['mixedae_mm/models/selfsup/mixedae.py',
                     'models/backbones/mixedae_vit.py', 'mixing.py',
                     'homologous.py']
    paths = [named[0], f'mixedae_mm/{named[1]}',
             *(f'mixedae_mm/ops/{name}' for name in named[2:])]
    modules = [path[:-len('.py')].replace('/', '.') for path in paths]
    for path in paths:
        assert osp.isfile(osp.join(ROOT, path)), path
    assert MixedAE.loss.__module__ == modules[0]
    for cls in (MixedAEViT, MixedAEEncoderLayer, HomologousAttention):
        assert cls.__module__ == modules[1], cls
    for function in (ops.sample_partition, ops.mix_images, ops.unmix_tokens):
        assert function.__module__ == modules[2], function
    for function in (ops.topk_attention_reference, ops.homologous_accuracy,
                     ops.homologous_contrastive_loss):
        assert function.__module__ == modules[3], function
    assert '`MIXEDAE_FAST_ATTN=0`' in readme[start:]  # tests/test_models.py


def test_readme_paper_targets_are_the_shipped_recipes_targets():
    """The README's "Paper targets" quote the numbers the recipes carry:
    the model index's ImageNet top-1 and ADE20K mIoU, and the margins over
    MAE stated in the fine-tune and UperNet recipes and the Mask R-CNN
    metafile."""
    def text(path):
        with open(osp.join(ROOT, path)) as f:
            return ' '.join(f.read().replace('#', ' ').split())

    finetune = text('configs/finetune/mixedae_vitb_ft-100e_in1k.py')
    upernet = text('configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py')
    assert 'top-1 83.9' in finetune and '(MAE: 83.6)' in finetune
    assert '48.7 mIoU' in upernet and '(+1.7 over MAE)' in upernet
    assert 'MAE + 0.9 AP' in text('configs/det/metafile.yml')
    assert ('ImageNet fine-tune 83.9 (MAE 83.6), ADE20K UperNet 48.7 mIoU '
            '(MAE + 1.7), COCO Mask R-CNN MAE + 0.9 AP.'
            ) in readme_sentences()

def test_get_model_loads_a_checkpoint_by_path(pretrained_checkpoint):
    import mixedae_mm  # noqa: F401
    from mmpretrain import get_model
    model = get_model('mixedae_vit-tiny-p8_demo',
                      pretrained=pretrained_checkpoint)
    saved = torch.load(pretrained_checkpoint, map_location='cpu',
                       weights_only=True)['state_dict']
    own = model.state_dict()
    assert set(saved) == set(own)
    for key, value in saved.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize('model,tokens,width', [
    ('mixedae_vit-tiny-p8_demo', 1 + 8 * 8, 192),  # 64px crop, patch 8
    (osp.join(ROOT, 'configs/mixedae_vitb_1600e.py'), 1 + 14 * 14, 768),
    ('mixedae_vitl_1600e', 1 + 14 * 14, 1024),
])
def test_feature_extractor_on_pretraining_configs(model, tokens, width,
                                                  pretrained_checkpoint):
    """FeatureExtractor gives the un-mixed encoder's last block: cls token +
    every patch of the centre crop (mixing would keep a quarter of them and
    draw a new partition each call)."""
    import mixedae_mm  # noqa: F401
    from mmpretrain import FeatureExtractor
    pretrained = pretrained_checkpoint if 'demo' in model else False
    extractor = FeatureExtractor(model, pretrained=pretrained, device='cpu')
    first, again = extractor(photo())[0], extractor(photo())[0]
    assert len(first) == 1 and first[0].shape == (tokens, width)
    assert torch.isfinite(first[0]).all()
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)


def test_inference_model_by_name_and_on_a_pretraining_model():
    """``inference_model`` picks the inferencer from the entry's task: a
    fine-tune recipe classifies, a pretraining model has no task (use
    FeatureExtractor) and mmpretrain says so."""
    import mixedae_mm  # noqa: F401
    from mmpretrain import get_model, inference_model
    result = inference_model(
        'mixedae_vitb_linear-90e_in1k', photo(), device='cpu')
    assert 0 <= result['pred_label'] < 1000
    with pytest.raises(NotImplementedError, match='No available inferencer'):
        inference_model(get_model('mixedae_vit-tiny-p8_demo'), photo())


def test_test_tool_still_refuses_a_pretraining_config():
    """The test_pipeline for inferencers adds no test loop: tools/test.py
    still says a pretraining config has nothing to evaluate."""
    with pytest.raises(SystemExit,
                       match='has no test_dataloader: it is a pretraining '
                       'config'):
        load_tool('test.py').main(
            [osp.join(ROOT, 'configs/mixedae_vitb_1600e.py'), 'missing.pth'])


def test_image_classification_inferencer(pretrained_checkpoint):
    import mixedae_mm  # noqa: F401
    from mmpretrain import ImageClassificationInferencer
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 'demo-tiny', 'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8, 'model.head.in_channels': 192,
        'test_dataloader.dataset.pipeline.1.scale': 73,
        'test_dataloader.dataset.pipeline.2.crop_size': 64})
    inferencer = ImageClassificationInferencer(cfg, device='cpu')
    result = inferencer(photo())[0]
    assert result['pred_scores'].shape == (1000, )
    assert 0 <= result['pred_label'] < 1000


def test_mmseg_inferencer():
    pytest.importorskip('mmseg')
    import mixedae_mm  # noqa: F401
    from mmseg.apis import MMSegInferencer
    from builders import seg_overrides
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py'))
    overrides = {k: v for k, v in seg_overrides(None, '').items()
                 if k.startswith('model.') and 'init_cfg' not in k}
    overrides['test_dataloader.dataset.pipeline.1.scale'] = (256, 64)
    cfg.merge_from_dict(overrides)
    inferencer = MMSegInferencer(cfg, device='cpu')
    result = inferencer(photo(), return_datasamples=True)
    seg = result.pred_sem_seg.data
    # mmseg resizes the prediction back to the photo's 512 x 512
    assert seg.shape == (1, 512, 512)
    assert 0 <= seg.min() and seg.max() < 150  # ADE20K's classes


def test_det_inferencer():
    pytest.importorskip('mmdet')
    import mixedae_mm  # noqa: F401
    from mmdet.apis import DetInferencer
    from builders import det_overrides
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py'))
    overrides = {k: v for k, v in det_overrides(None, '').items()
                 if k.startswith('model.') and 'init_cfg' not in k
                 and 'num_classes' not in k}
    overrides['test_dataloader.dataset.pipeline.1.scale'] = (128, 128)
    # random weights score every class near 1/81, under the 0.05 threshold
    overrides['model.test_cfg.rcnn.score_thr'] = 0.
    cfg.merge_from_dict(overrides)
    inferencer = DetInferencer(cfg, device='cpu', show_progress=False)
    result = inferencer(photo(), return_datasamples=True)
    instances = result['predictions'][0].pred_instances
    # boxes in the photo's own pixels, COCO's 80 classes, one mask per box
    assert len(instances) > 0
    assert instances.bboxes.max() <= 512 and instances.labels.max() < 80
    assert instances.masks.shape[1:] == (512, 512)


def build_wheel(tmp_path):
    """A wheel built from a copy of this clone (setuptools writes build/
    and *.egg-info in place); returns its path."""
    source, wheels = tmp_path / 'src', tmp_path / 'wheels'
    source.mkdir()
    for part in ('setup.py', 'README.md', 'model-index.yml', 'requirements',
                 'mixedae_mm', 'configs', 'tools', 'weights'):
        path = osp.join(ROOT, part)
        if osp.isdir(path):
            shutil.copytree(path, str(source / part),
                            ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(path, str(source))
    result = subprocess.run(
        [sys.executable, '-m', 'pip', '-q', 'wheel', '--no-deps',
         '--no-build-isolation', '-w', str(wheels), str(source)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    wheel, = glob.glob(str(wheels / '*.whl'))
    return wheel


@pytest.mark.slow
def test_an_installed_wheel_ships_the_model_index(tmp_path):
    """A wheel built from this clone carries model-index.yml, configs/ and
    the published weights (mixedae_mm/.mim): installed elsewhere, names
    still resolve to configs inside the package, build and load."""
    site = tmp_path / 'site'
    result = subprocess.run(
        [sys.executable, '-m', 'pip', '-q', 'install', '--no-deps',
         '--target', str(site), build_wheel(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, '-c',
         'import json, mixedae_mm\n'
         'from mmpretrain import get_model, list_models\n'
         'from mmpretrain.apis.model import ModelHub\n'
         'names = [n for n in list_models() if "mixedae_mm/.mim" in\n'
         '         ModelHub._models_dict[n].config]\n'
         'model = get_model("mixedae_vit-tiny-p8_demo")\n'
         'study = get_model("mixedae_vit-study-p4_fmnist", pretrained=True)\n'
         'print(json.dumps([mixedae_mm.__file__, len(names),\n'
         '    ModelHub.get("mixedae_vitl_1600e").config.filename,\n'
         '    ModelHub._models_dict["mixedae_vit-study-p4_fmnist"].weights]))\n'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    package, count, config, weights = json.loads(
        result.stdout.strip().splitlines()[-1])
    assert package.startswith(str(site))
    assert count == len(recipe_configs())
    assert config == str(
        site / 'mixedae_mm/.mim/configs/mixedae_vitl_1600e.py')
    # the published study weights travel in the wheel and load from it
    assert weights.startswith(str(site / 'mixedae_mm/.mim/weights/study/'))


#: prints ``{command: what 'command --help' printed}`` for the commands
#: named in its arguments, each installed script run as ``__main__``
RUN_EACH_WITH_HELP = """
import contextlib, io, json, runpy, shutil, sys
helps = {}
for command in sys.argv[1:]:
    sys.argv = [shutil.which(command), '--help']
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(sys.argv[0], run_name='__main__')
        except SystemExit as exit:
            assert exit.code in (0, None), (command, exit.code)
    helps[command] = out.getvalue()
print(json.dumps(helps))
"""


@pytest.mark.slow
def test_an_installed_wheel_has_the_tools_as_commands(tmp_path):
    """pip-installed (a fresh venv over this Python's packages, the wheel
    without dependencies), the tools are commands that work from a folder
    outside the clone: build the demo data, train the demo recipe by name,
    draw its reconstructions; every command answers --help."""
    venv = tmp_path / 'venv'
    # no pip of its own (ensurepip takes seconds): this Python's pip, seen
    # through the system site-packages, installs into the venv it runs in
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages',
                    '--without-pip', str(venv)], check=True, timeout=300)
    bin_dir = venv / 'bin'
    result = subprocess.run(
        [str(bin_dir / 'python'), '-m', 'pip', 'install', '-q', '--no-deps',
         build_wheel(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    user = tmp_path / 'elsewhere'
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1',
               PATH=str(bin_dir) + os.pathsep + env.get('PATH', ''))

    def run(*command):
        result = subprocess.run(command, cwd=str(user), env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-4000:])
        return result.stdout

    package = run('python', '-c',
                  'import mixedae_mm; print(mixedae_mm.__file__)')
    assert package.strip().startswith(str(venv))
    commands = ('mixedae-train', 'mixedae-test', 'mixedae-knn',
                'mixedae-vis-reconstruction', 'mixedae-vis-attention',
                'mixedae-demo-data')
    # every command's --help in one interpreter (one import of OpenMMLab,
    # not six): each installed script run as its own main program
    helps = json.loads(run('python', '-c', RUN_EACH_WITH_HELP,
                           *commands).strip().splitlines()[-1])
    for command in commands:
        assert f'usage: {command}' in helps[command], helps[command]
    run('mixedae-demo-data', 'photos', '--crops-per-photo', '1',
        '--crop-size', '72')
    run('mixedae-train', 'mixedae_vit-tiny-p8_demo', '--work-dir', 'work',
        '--cfg-options', 'train_dataloader.dataset.data_root=photos',
        'train_dataloader.batch_size=4', *IN_PROCESS_LOADING,
        'train_cfg.max_iters=2')
    checkpoint = user / 'work' / 'iter_2.pth'
    assert checkpoint.exists()
    images = sorted(glob.glob(str(user / 'photos' / 'train' / '*.png')))[:4]
    out = run('mixedae-vis-reconstruction', 'mixedae_vit-tiny-p8_demo',
              str(checkpoint), *images, '--out', 'pictures')
    assert 'pictures/group_0.png' in out
    assert (user / 'pictures' / 'group_0.png').exists()
