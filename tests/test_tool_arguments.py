"""Every numeric flag of the tools in tools/ refuses a value it cannot use
(zero or negative sizes, a utilisation above 1, not a number) with exit
status 2 and one line naming the flag, before any model is built; a missing
config or checkpoint file is named the same way."""
import glob
import os
import os.path as osp
import runpy
import signal
import sys

import pytest
from conftest import call_tool, load_tool, run_python

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs/demo/mixedae_vit-tiny-p8_demo.py')
PICTURE_TOOLS = ['visualization/vis_reconstruction.py',
                 'visualization/vis_homologous_attention.py']


tool = load_tool


def refused(capsys, parse_args, argv):
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    # argparse's "PROG: error: MESSAGE", PROG being sys.argv[0] (pytest's
    # here, the tool's name when run)
    prog, _, message = err.strip().splitlines()[-1].partition(': error: ')
    assert prog and message
    return message


@pytest.mark.parametrize('flag,value,says', [
    ('--batch-size', '-4', 'must be an integer >= 1, got -4'),
    ('--batch-size', '0', 'must be an integer >= 1, got 0'),
    ('--fsdp-world-size', '0', 'must be an integer >= 1, got 0'),
    ('--sample-batch', '-1', 'must be an integer >= 1, got -1'),
    ('--batch-size', '2.5', "expected an integer, got '2.5'"),
])
def test_estimate_memory(capsys, flag, value, says):
    line = refused(capsys,
                   tool('analysis_tools/estimate_memory.py').parse_args,
                   [CONFIG, flag, value])
    assert line == f'argument {flag}: {says}'


@pytest.mark.parametrize('flag,value,says', [
    ('--batch-size', '6',
     'must be a positive multiple of 4 (the group size), got 6'),
    ('--batch-size', '0',
     'must be a positive multiple of 4 (the group size), got 0'),
    ('--img-size', '0', 'must be an integer >= 1, got 0'),
    ('--patch-size', '-16', 'must be an integer >= 1, got -16'),
    ('--steps', '-1', 'must be an integer >= 0, got -1'),
    ('--warmup', '-2', 'must be an integer >= 0, got -2'),
    ('--peak-tflops', '0', 'must be > 0, got 0'),
    ('--threads', '0', 'must be an integer >= 1, got 0'),
    ('--profile-ops', '-3', 'must be an integer >= 0, got -3'),
])
def test_benchmark_vs_mae(capsys, flag, value, says):
    line = refused(capsys, tool('analysis_tools/benchmark_vs_mae.py')
                   .parse_args, [flag, value])
    assert line == f'argument {flag}: {says}'


def test_benchmark_decoder_sizes(capsys):
    line = refused(capsys, tool('analysis_tools/benchmark_vs_mae.py')
                   .parse_args, ['--decoder', '512', '0', '16'])
    assert line == 'argument --decoder: must be an integer >= 1, got 0'


@pytest.mark.parametrize('flag,value,says', [
    ('--k', '0', 'must be an integer >= 1, got 0'),
    ('--temperature', '0', 'must be > 0, got 0'),
    ('--temperature', '-0.07', 'must be > 0, got -0.07'),
    ('--batch-size', '-128', 'must be an integer >= 1, got -128'),
    ('--num-workers', '-1', 'must be an integer >= 0, got -1'),
])
def test_knn_eval(capsys, flag, value, says):
    line = refused(capsys, tool('analysis_tools/knn_eval.py').parse_args,
                   [CONFIG, 'ckpt.pth', flag, value])
    assert line == f'argument {flag}: {says}'


def test_plot_log_group_size(capsys):
    line = refused(capsys, tool('analysis_tools/plot_log.py').parse_args,
                   ['work_dir', '--out', 'x.png', '--group-size', '0'])
    assert line == 'argument --group-size: must be an integer >= 1, got 0'


@pytest.mark.parametrize('script', PICTURE_TOOLS)
@pytest.mark.parametrize('flag,value,says', [
    ('--scale', '-2', 'must be an integer >= 0, got -2'),
    ('--seed', '-1', 'must be an integer >= 0, got -1'),
])
def test_picture_tools(capsys, script, flag, value, says):
    line = refused(capsys, tool(script).parse_args,
                   [CONFIG, CONFIG, 'img.png', '--out', 'o', flag, value])
    assert line == f'argument {flag}: {says}'


@pytest.mark.parametrize('script,argv,says', [
    ('train.py', ['missing.py'], 'argument config: no such file: missing.py'),
    ('train.py', [CONFIG, '--local-rank', '-1'],
     'argument --local_rank/--local-rank: must be an integer >= 0, got -1'),
    ('test.py', [ROOT, 'x.pth'],
     f'argument config: a folder, not a file: {ROOT}'),
    ('analysis_tools/estimate_memory.py', ['missing.py'],
     'argument config: no such file: missing.py'),
    ('visualization/vis_reconstruction.py',
     [CONFIG, 'missing.pth', 'img.png', '--out', 'o'],
     'argument checkpoint: no such file: missing.pth'),
    ('visualization/demo_figures.py',
     ['work_dir', '--out', 'o', '--config', 'missing.py'],
     'argument --config: no such file: missing.py'),
])
def test_missing_files(capsys, script, argv, says):
    line = refused(capsys, tool(script).parse_args, argv)
    assert line == says


def tool_error(capsys, main, argv):
    """The one line a tool exits with (SystemExit's message)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert '\n' not in message and 'Traceback' not in capsys.readouterr().err
    return message


def test_plot_log_on_an_empty_scalars_file(capsys, tmp_path):
    """A run that has not logged yet has an empty vis_data/scalars.json."""
    scalars = tmp_path / 'vis_data' / 'scalars.json'
    scalars.parent.mkdir()
    scalars.write_text('')
    message = tool_error(capsys, tool('analysis_tools/plot_log.py').main,
                         [str(tmp_path), '--out', str(tmp_path / 'c.png')])
    assert message == (
        f'error: {scalars} holds no scalars yet: the run has not logged '
        'once (default_hooks.logger.interval iterations); plot it later')


def test_plot_log_skips_the_line_a_running_job_is_writing(tmp_path):
    from mixedae_mm.visualization import curves as plot_log
    scalars = tmp_path / 'scalars.json'
    scalars.write_text('{"loss": 1.5, "step": 1}\n{"loss": 1.2, "step": 2}\n'
                       '{"loss": 1.')
    assert plot_log.read_scalars(str(scalars)) == {'loss': ([1, 2],
                                                            [1.5, 1.2])}
    scalars.write_text('{"loss": 1.5, "step": 1}\n{"loss": 1.\n'
                       '{"loss": 1.1, "step": 3}\n')
    with pytest.raises(SystemExit, match=f'{scalars}, line 2: not a JSON '
                       'record; the file is damaged'):
        plot_log.read_scalars(str(scalars))


@pytest.mark.parametrize('script', PICTURE_TOOLS)
@pytest.mark.parametrize('content,says', [
    (b'', 'is empty (0 bytes)'),
    (b'<html>not a picture</html>',
     'holds 26 bytes that do not decode as an image'),
])
def test_picture_tools_name_a_file_that_is_no_image(
        capsys, tmp_path, script, content, says):
    """Checked before the model is loaded (the 'checkpoint' here is never
    read), given directly or found in a folder."""
    fake = tmp_path / 'photos' / 'cat.jpg'
    fake.parent.mkdir()
    fake.write_bytes(content)
    main = tool(script).main
    for given in (fake, fake.parent):
        message = tool_error(capsys, main, [CONFIG, CONFIG, str(given),
                                            '--out', str(tmp_path / 'o')])
        assert message == f'error: {fake} {says}: give image files'


@pytest.mark.parametrize('missing', ['val', 'train'])
def test_knn_eval_names_a_missing_split_folder(pretrained_checkpoint,
                                               tmp_path, missing, capsys):
    """Before, a data root without val/ extracted every training feature
    and then died with FileNotFoundError on the first val image."""
    import shutil

    from builders import tiny_imagenet
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    shutil.rmtree(osp.join(data, missing))
    result = call_tool('analysis_tools/knn_eval.py', CONFIG,
                       pretrained_checkpoint, '--data-root', data,
                       '--num-workers', '0', '--device', 'cpu',
                       capsys=capsys)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: no {missing} split: {osp.join(data, missing)} is not a '
        'folder; --data-root must hold the train/ and val/ image folders')


@pytest.mark.parametrize('sizes,says', [
    (['--img-size', '60', '--patch-size', '8'],
     '--img-size 60 is not a multiple of --patch-size 8'),
    (['--img-size', '56', '--patch-size', '8'],
     '7x7 = 49 patches per image: pick --img-size / --patch-size so that '
     'the patch count is a multiple of the group size 4'),
])
def test_benchmark_sizes_that_cannot_be_mixed(capsys, sizes, says):
    line = refused(capsys, tool('analysis_tools/benchmark_vs_mae.py')
                   .parse_args, ['--arch', 'demo-tiny'] + sizes)
    assert line == says


def test_estimate_memory_sample_batch_the_model_cannot_mix(capsys):
    message = tool_error(capsys,
                         tool('analysis_tools/estimate_memory.py').main,
                         [CONFIG, '--sample-batch', '6'])
    assert message == ('estimate_memory.py: error: --sample-batch 6 is not '
                       'a multiple of the mixing group size 4 of this '
                       'config')


def test_test_tool_names_a_missing_checkpoint(capsys):
    message = tool_error(capsys, tool('test.py').main, [
        osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'),
        'missing.pth'])
    assert message == 'test.py: error: missing.pth: no such checkpoint file'


def test_a_file_that_is_no_checkpoint_is_not_called_pickled(tmp_path):
    """Bytes that are neither torch.save's zip nor a pickle (a text file,
    an image renamed .pth) used to be reported as 'holds pickled Python
    objects' with advice to trust them; a real pickled object still is."""
    import argparse

    import torch

    from mixedae_mm.checkpoint_io import CheckpointError, load_weights_only
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint\n')
    with pytest.raises(CheckpointError) as refused_file:
        load_weights_only(text)
    assert str(refused_file.value) == (
        f"{text}: not a checkpoint, a text file (it begins 'not a "
        "checkpoint'); torch.save writes a zip archive (or a pickle): give a "
        '.pth file saved by torch')
    pickled = tmp_path / 'pickled.pth'
    torch.save({'args': argparse.Namespace(lr=1.)}, pickled)
    with pytest.raises(CheckpointError, match='holds pickled Python objects'):
        load_weights_only(pickled)


def _saved_then_cut(path):
    import torch
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize('content,says', [
    # 'e' is 101: torch's legacy reader failed with KeyError: 101
    (b'epoch 12: loss 0.31\n', "not a checkpoint, a text file (it begins "
     "'epoch 12: loss 0.31')"),
    (bytes(range(256)) * 2, 'not a checkpoint, 512 bytes that are neither '
     'a zip archive nor a pickle'),
    (b'', 'not a checkpoint, an empty file (0 bytes)'),
    # begins as a pickle of protocol 2, then garbage
    (b'\x80\x02' + bytes(range(40, 200)), 'not a complete checkpoint'),
    (_saved_then_cut, 'not a complete checkpoint'),
    (None, 'a folder, not a checkpoint file: give the .pth file inside it'),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, content,
                                                      says):
    from mixedae_mm.checkpoints import CheckpointError, load_weights_only
    path = tmp_path / 'iter_2.pth'
    if content is None:
        path.mkdir()
    elif callable(content):
        content(path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as refused_file:
        load_weights_only(path)
    message = str(refused_file.value)
    assert message.startswith(f'{path}: {says}') and '\n' not in message


def _png(path):
    from PIL import Image
    Image.new('RGB', (64, 64), (120, 30, 200)).save(path)
    return str(path)


@pytest.mark.parametrize('script,argv', [
    ('model_converters/extract_backbone.py', ['{ckpt}', '{out}']),
    ('model_converters/convert_timm.py', ['{ckpt}', '{out}', '--to', 'mae']),
    ('model_converters/trust_checkpoint.py', ['{ckpt}', '{out}', '--trust']),
    ('model_converters/publish_model.py', ['{ckpt}', '{out}']),
    ('analysis_tools/knn_eval.py', [CONFIG, '{ckpt}']),
] + [(script, [CONFIG, '{ckpt}', '{img}', '--out', '{out}'])
     for script in PICTURE_TOOLS])
@pytest.mark.parametrize('given', ['text', 'folder', 'missing'])
def test_every_tool_says_what_a_checkpoint_is_not(capsys, tmp_path, script,
                                                  argv, given):
    """One line, ``error: ...``, for a file that is no checkpoint, a
    folder, a missing file (where argparse lets it through)."""
    ckpt = tmp_path / 'iter_2.pth'
    if given == 'text':
        ckpt.write_text('epoch 12: loss 0.31\n')
    elif given == 'folder':
        ckpt.mkdir()
    names = dict(ckpt=str(ckpt), out=str(tmp_path / 'out.pth'),
                 img=_png(tmp_path / 'cat.png'))
    argv = [a.format(**names) for a in argv]
    if given != 'text' and script in PICTURE_TOOLS:
        refused(capsys, tool(script).parse_args, argv)  # argparse's line
        return
    message = tool_error(capsys, tool(script).main, argv)
    assert 'error: ' in message and str(ckpt) in message
    assert {'text': 'a text file', 'folder': 'a folder',
            'missing': 'no such checkpoint file'}[given] in message


def test_get_model_says_what_a_checkpoint_is_not(tmp_path):
    from mmpretrain import get_model

    from mixedae_mm.checkpoints import CheckpointError
    text = tmp_path / 'iter_2.pth'
    text.write_text('epoch 12: loss 0.31\n')
    with pytest.raises(CheckpointError, match='not a checkpoint, a text '
                       'file'):
        get_model(CONFIG, pretrained=str(text))


@pytest.mark.slow
def test_train_resume_from_a_file_that_is_no_checkpoint(capsys, tmp_path,
                                                        demo_data):
    text = tmp_path / 'iter_2.pth'
    text.write_text('epoch 12: loss 0.31\n')
    message = tool_error(capsys, tool('train.py').main, [
        CONFIG, '--work-dir', str(tmp_path / 'work'), '--resume', str(text),
        '--cfg-options', f'train_dataloader.dataset.data_root={demo_data}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False'])
    assert message.startswith(f'train.py: error: {text}: not a checkpoint, '
                              'a text file')


FINETUNE = osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py')
DETECTION = osp.join(
    ROOT, 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py')


@pytest.mark.parametrize('script,argv,says', [
    ('train.py', [CONFIG, '--cfg-options',
                  'train_dataloader.dataset.data_root={missing}'],
     'train.py: error: {missing} is not a folder (train_dataloader): put the '
     'dataset there or pass --cfg-options '
     'train_dataloader.dataset.data_root=PATH'),
    # ImageNet layout: the root exists, its train/ split does not
    ('train.py', [FINETUNE, '--cfg-options',
                  'train_dataloader.dataset.data_root={empty}',
                  'val_dataloader.dataset.data_root={empty}'],
     'train.py: error: {empty}/train is not a folder (train_dataloader): put '
     'the dataset there or pass --cfg-options '
     'train_dataloader.dataset.data_root=PATH'),
    # COCO is wrapped in a RepeatDataset: the key says where data_root is
    ('train.py', [DETECTION, '--cfg-options',
                  'train_dataloader.dataset.dataset.data_root={missing}'],
     'train.py: error: {missing} is not a folder (train_dataloader): put the '
     'dataset there or pass --cfg-options '
     'train_dataloader.dataset.dataset.data_root=PATH'),
    ('test.py', [FINETUNE, CONFIG, '--cfg-options',
                 'test_dataloader.dataset.data_root={missing}'],
     'test.py: error: {missing} is not a folder (test_dataloader): put the '
     'dataset there or pass --cfg-options '
     'test_dataloader.dataset.data_root=PATH'),
])
def test_train_and_test_name_a_missing_dataset_folder(capsys, tmp_path,
                                                      script, argv, says):
    """Before, the data loader's FileNotFoundError came as a traceback."""
    folders = dict(missing=str(tmp_path / 'nowhere'), empty=str(tmp_path))
    message = tool_error(capsys, tool(script).main,
                         [a.format(**folders) for a in argv])
    assert message == says.format(**folders)


@pytest.mark.parametrize('option,says', [
    ('model.ablation=bogus', "model.ablation must be one of ['homo_attn_only',"
     " 'mae', 'naive_mixing', 'none'], got 'bogus'"),
    ('train_dataloader.batch_size=6', 'train_dataloader.batch_size=6 cannot '
     'be mixed: MixedAE mixes groups of 4 images; use a per-GPU batch size '
     'that is a multiple of 4'),
])
def test_train_refuses_a_model_setting_before_the_runner_is_built(
        capsys, option, says):
    """The message was right, but came at the end of a traceback after the
    runner's start-up log."""
    with pytest.raises(SystemExit) as stop:
        tool('train.py').main([CONFIG, '--cfg-options', option])
    assert stop.value.code == f'train.py: error: {says}'
    printed = capsys.readouterr()
    assert printed.out == '' and 'Traceback' not in printed.err


def test_the_mae_ablation_has_no_groups_to_fill():
    from mixedae_mm.models.selfsup.ablations import check_pretraining_config
    from mmengine.config import Config
    model = Config.fromfile(CONFIG).model
    check_pretraining_config(dict(model, ablation='mae'), 6)
    with pytest.raises(ValueError, match='multiple of 2'):
        check_pretraining_config(
            dict(model, backbone=dict(model.backbone, mixing_ratio=0.5)), 3)


def test_estimate_memory_batch_size_the_model_cannot_mix(capsys):
    """Refused like --sample-batch: before, it printed an estimate for a
    batch MixedAE cannot mix."""
    message = tool_error(capsys,
                         tool('analysis_tools/estimate_memory.py').main,
                         [CONFIG, '--batch-size', '3'])
    assert message == ('estimate_memory.py: error: --batch-size 3 is not a '
                       'multiple of the mixing group size 4 of this config')


@pytest.mark.parametrize('config,model', [
    (FINETUNE, 'ImageClassifier'),
    ('configs/finetune/mixedae_vitb_linear-90e_in1k.py', 'ImageClassifier'),
    ('configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py', 'EncoderDecoder'),
])
def test_estimate_memory_needs_a_pretraining_config(capsys, config, model):
    """Before: an IndexError after up to a minute of building."""
    config = osp.join(ROOT, config)
    message = tool_error(capsys,
                         tool('analysis_tools/estimate_memory.py').main,
                         [config])
    assert message == (
        f'estimate_memory.py: error: {config} is not a MixedAE pretraining '
        f'config (its model is {model}): give a pretraining config, e.g. '
        'configs/mixedae_vitb_1600e.py')


@pytest.mark.parametrize('config,says', [
    (FINETUNE, '{config} is not a MixedAE pretraining config (its model is '
     'ImageClassifier): give a pretraining config, e.g. '
     'configs/mixedae_vitb_1600e.py'),
    (osp.join(ROOT, 'configs/study/naive-mixing_vit-study-p4_fmnist.py'),
     "{config} has no homologous attention to draw (model.ablation="
     "'naive_mixing'): give a MixedAE pretraining config with it (ablation "
     "'none' or 'homo_attn_only')"),
])
def test_the_attention_picture_needs_homologous_attention(capsys, tmp_path,
                                                          config, says):
    """Before: the fine-tune config blamed 'ablation mae or naive_mixing'
    after loading the model."""
    message = tool_error(
        capsys, tool('visualization/vis_homologous_attention.py').main,
        [config, CONFIG, _png(tmp_path / 'cat.png'), '--out',
         str(tmp_path / 'o')])
    assert message == 'error: ' + says.format(config=config)


def _scalars(folder, records):
    import json
    path = folder / 'scalars.json'
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return str(path)


def test_plot_log_draws_a_curve_of_one_point_as_a_marker(tmp_path):
    """A line through one point is invisible: the plot had axes and no
    data."""
    from mixedae_mm.visualization.curves import draw
    fig, keys = draw(_scalars(tmp_path, [
        dict(step=25, loss=2.5, homo_acc=0.3, lr=1e-4)]))
    lines = [line for ax in fig.axes for line in ax.lines
             if line.get_label() in keys]
    assert sorted(line.get_label() for line in lines) == sorted(keys)
    assert all(line.get_marker() == 'o' for line in lines)
    fig, _ = draw(_scalars(tmp_path, [dict(step=25, loss=2.5),
                                      dict(step=50, loss=2.4)]))
    assert fig.axes[0].lines[0].get_marker() in ('None', None, '')


def test_plot_log_creates_the_folder_of_its_output(tmp_path):
    out = tmp_path / 'figures' / 'run1' / 'curves.png'
    tool('analysis_tools/plot_log.py').main(
        [_scalars(tmp_path, [dict(step=1, loss=2.5), dict(step=2, loss=2.4)]),
         '--out', str(out)])
    assert out.stat().st_size > 0


#: every command line in tools/ but gpu_check.py, which imports only the
#: standard library and runs its checks as child processes
TOOL_SCRIPTS = sorted(
    osp.relpath(path, osp.join(ROOT, 'tools')) for path in glob.glob(
        osp.join(ROOT, 'tools', '**', '*.py'), recursive=True)
    if not path.endswith('gpu_check.py'))


@pytest.mark.parametrize('script', TOOL_SCRIPTS)
def test_ctrl_c_during_the_imports_is_one_line(tmp_path, script):
    """A Ctrl-C while torch and OpenMMLab import (seconds) printed a
    53-line traceback through them. A stand-in ``torch`` package that
    raises KeyboardInterrupt when imported, as a Ctrl-C there does, makes
    the moment certain."""
    (tmp_path / 'torch').mkdir()
    (tmp_path / 'torch' / '__init__.py').write_text('raise KeyboardInterrupt\n')
    result = run_python(
        f'tools/{script}', '--help', check=False,
        env=dict(PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]),
                 PYTHONWARNINGS='ignore'))
    # exit status 130 as the shell reports it: Python re-raises SIGINT on
    # itself after an uncaught KeyboardInterrupt (-2), the study exits 130
    assert result.returncode in (130, -signal.SIGINT), result.stderr
    assert 'Traceback' not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert line.endswith(('interrupted (Ctrl-C)',
                          'stopped by SIGINT; the finished runs are kept: '
                          'run the study again to continue'))


@pytest.mark.parametrize('script', TOOL_SCRIPTS)
def test_every_tool_runs_as_a_script(script, capsys, monkeypatch):
    """Run as a script, each file in tools/ hands its arguments to its
    command line (most tests call a tool's ``main`` directly): ``--help``,
    the file run as ``__main__`` in this process."""
    path = osp.join(ROOT, 'tools', script)
    # the script installs its Ctrl-C hook: restored after the test
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    monkeypatch.setattr(sys, 'argv', [path, '--help'])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(path, run_name='__main__')
    assert stop.value.code in (0, None)
    assert 'usage: ' in capsys.readouterr().out
