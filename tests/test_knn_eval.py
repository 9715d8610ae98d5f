"""Weighted kNN probe: the pure scoring function and the tool on a tiny
ImageNet-layout dataset with a real demo pretraining checkpoint."""
import json
import math
import subprocess
import sys

import pytest
import torch

from mixedae_mm.evaluation import knn_accuracy, weighted_knn_scores
from builders import tiny_imagenet


def test_weights_decide_against_the_majority():
    """Two class-0 neighbours at 60 degrees, one class-1 neighbour at 10:
    a sharp temperature follows the nearest, a flat one the majority."""
    angles = torch.tensor([60., -60., 10.]) * math.pi / 180
    train = torch.stack([angles.cos(), angles.sin()], 1) * 5  # any scale
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[1., 0.]])
    sharp = weighted_knn_scores(train, labels, query, 2, k=3,
                                temperature=0.07)
    flat = weighted_knn_scores(train, labels, query, 2, k=3,
                               temperature=100.)
    assert sharp.argmax(1).item() == 1 and flat.argmax(1).item() == 0
    expected = torch.tensor([2 * math.exp(0.5 / 0.07),
                             math.exp(math.cos(math.pi / 18) / 0.07)])
    torch.testing.assert_close(sharp[0], expected, rtol=1e-4, atol=0)


def test_chunks_match_one_query_at_a_time():
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(50, 8, generator=gen)
    query = torch.randn(7, 8, generator=gen)
    labels = torch.randint(0, 4, (50, ), generator=gen)
    chunked = weighted_knn_scores(train, labels, query, 4, k=5, chunk_size=3)
    for i in range(7):
        sim = torch.nn.functional.cosine_similarity(query[i:i + 1], train)
        top = sim.topk(5)
        own = torch.zeros(4).index_add_(0, labels[top.indices],
                                        (top.values / 0.07).exp())
        torch.testing.assert_close(chunked[i], own, rtol=1e-4, atol=1e-6)


def test_accuracy_and_bad_input():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]])
    assert knn_accuracy(scores, torch.tensor([2, 0]), topk=(1, 2)) == {
        'top1': 50., 'top2': 100.}
    with pytest.raises(ValueError, match='5 training features but 4 labels'):
        weighted_knn_scores(torch.ones(5, 2), torch.zeros(4).long(),
                            torch.ones(1, 2), 2)


@pytest.mark.slow
def test_tool_on_the_demo_checkpoint(repo_root, pretrained_checkpoint,
                                     tmp_path):
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=6, classes=3)
    result = subprocess.run(
        [sys.executable, 'tools/analysis_tools/knn_eval.py',
         'configs/demo/mixedae_vit-tiny-p8_demo.py', pretrained_checkpoint,
         '--data-root', data, '--k', '5', '--batch-size', '8',
         '--num-workers', '0', '--device', 'cpu'],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['train_images'] == report['val_images'] == 18
    # the classes differ in brightness: frozen features separate them
    # better than chance (measured: 100%)
    assert 100 / 3 < report['top1'] <= report['top5'] == 100.  # 3 classes


@pytest.mark.slow
def test_two_processes_gather_the_same_features(repo_root,
                                               pretrained_checkpoint,
                                               tmp_path):
    """torchrun with 2 CPU processes (gloo): each extracts its share, the
    shares are gathered in dataset order, and the accuracies equal a
    one-process run's. 9 images per split: the sampler pads one."""
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=3, classes=3)
    args = ['tools/analysis_tools/knn_eval.py',
            'configs/demo/mixedae_vit-tiny-p8_demo.py', pretrained_checkpoint,
            '--data-root', data, '--k', '3', '--batch-size', '2',
            '--num-workers', '0', '--device', 'cpu', '--feature', 'mean']
    reports, dumps = [], []
    for launch in ([sys.executable],
                   [sys.executable, '-m', 'torch.distributed.run',
                    '--nproc_per_node', '2', '--standalone']):
        extra = ['--launcher', 'pytorch'] if len(launch) > 1 else []
        dumps.append(tmp_path / f'features{len(dumps)}.pth')
        extra += ['--save-features', str(dumps[-1])]
        result = subprocess.run(
            launch + args + extra, cwd=repo_root, capture_output=True,
            text=True, timeout=300, env=dict(__import__('os').environ,
                                             OMP_NUM_THREADS='1'))
        assert result.returncode == 0, result.stderr[-4000:]
        lines = [line for line in result.stdout.splitlines()
                 if line.startswith('{')]
        assert len(lines) == 1, result.stdout  # rank 0 reports, once
        reports.append(json.loads(lines[0]))
    assert reports[0]['train_images'] == reports[1]['train_images'] == 9
    assert reports[0] == reports[1]
    one, two = (torch.load(d, weights_only=True) for d in dumps)
    for key in one:  # same images, same order, padding dropped
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    assert one['train_labels'].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_save_features_into_a_folder_is_refused_before_the_work(tmp_path):
    from conftest import load_tool
    main = load_tool('analysis_tools/knn_eval.py').main
    with pytest.raises(SystemExit) as stop:
        # the checkpoint does not exist: the check comes before any loading
        main(['configs/demo/mixedae_vit-tiny-p8_demo.py', 'missing.pth',
              '--save-features', str(tmp_path)])
    assert stop.value.code == (
        f'error: --save-features {tmp_path} is a folder: give a file name, '
        f'e.g. {tmp_path}/features.pth')


@pytest.mark.slow
def test_the_result_is_printed_before_the_features_are_saved(
        repo_root, pretrained_checkpoint, tmp_path, capsys, monkeypatch):
    """--save-features into a folder that does not exist: it is created
    before the extraction; the accuracies are printed before anything is
    saved, so a failed save loses nothing but the features."""
    from conftest import load_tool

    from mixedae_mm import checkpoints
    main = load_tool('analysis_tools/knn_eval.py').main
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    features = tmp_path / 'new' / 'folder' / 'features.pth'
    argv = ['configs/demo/mixedae_vit-tiny-p8_demo.py', pretrained_checkpoint,
            '--data-root', data, '--k', '2', '--batch-size', '4',
            '--num-workers', '0', '--device', 'cpu', '--save-features',
            str(features)]

    def disk_full(path, content):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(checkpoints, 'atomic_write', disk_full)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == (
        f'error: --save-features {features}: No space left on device; the '
        'result above is complete')
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed['train_images'] == printed['val_images'] == 4
    monkeypatch.undo()
    assert main(argv) == printed
    saved = torch.load(features, weights_only=True)
    assert saved['train_feats'].shape[0] == 4


def test_an_unknown_recipe_name_is_one_line():
    """mixedae-knn nonsense: mmpretrain's 'Failed to find model' came as a
    traceback; the other commands say what the argument must be."""
    from conftest import load_tool
    with pytest.raises(SystemExit) as stop:
        load_tool('analysis_tools/knn_eval.py').main(['nonsense', 'x.pth'])
    assert str(stop.value.code).startswith(
        'nonsense: neither a config file nor a recipe name')
