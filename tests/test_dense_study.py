"""The dense study: the scenes of Fashion-MNIST items
(tools/dataset_converters/fmnist_scenes.py), the UperNet and Mask R-CNN
study configs, and tools/analysis_tools/dense_study.py end to end on a
shrunk scene set."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
from mixedae_mm.datasets.fmnist_scenes import (ITEM_CLASSES, SEG_CLASSES,
                                               build_scene_set, compose_scene)
from conftest import (IN_PROCESS_LOADING, assert_results_page_shows,
                      call_tool, readme_sentences, run_python)

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

CONVERTER = 'tools/dataset_converters/fmnist_scenes.py'
STUDY = 'tools/analysis_tools/dense_study.py'
SEG_CONFIG = 'configs/study/upernet_vit-study-p4_fmnist-scenes-64.py'
#: loaders without worker processes, for the transfer runs
NO_WORKERS = [f'{loader}.{key}' for loader in (
    'train_dataloader', 'val_dataloader', 'test_dataloader')
    for key in ('num_workers=0', 'persistent_workers=False')]


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('scenes'))
    build_scene_set(DEBIAN_FASHION_MNIST, root, seed=0, num_train=24,
                    num_test=12)
    return root


def _files(root):
    import glob
    return {osp.relpath(p, root): open(p, 'rb').read()
            for p in sorted(glob.glob(osp.join(root, '**', '*.*'),
                                      recursive=True))}


def test_scenes_are_a_function_of_the_seed(scenes, tmp_path):
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    build_scene_set(DEBIAN_FASHION_MNIST, again, seed=0, num_train=24,
                    num_test=12)
    build_scene_set(DEBIAN_FASHION_MNIST, other, seed=1, num_train=24,
                    num_test=12)
    assert _files(again) == _files(scenes)
    assert _files(other) != _files(scenes)
    assert len(_files(scenes)) == 2 * 36 + 2 + 1  # images, maps, COCO, log


@pytest.mark.parametrize('split', ['train', 'test'])
def test_annotations_agree_with_the_pixels(scenes, split):
    """Every instance mask lies inside its box, masks do not overlap, and
    the class map is exactly the union of the instance masks with their
    classes (background elsewhere); the COCO file loads in pycocotools."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    coco = COCO(osp.join(scenes, 'annotations', f'instances_{split}.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
        ITEM_CLASSES)
    assert len(coco.getImgIds()) == (24 if split == 'train' else 12)
    ann_ids = [a['id'] for a in coco.dataset['annotations']]
    assert len(set(ann_ids)) == len(ann_ids)
    for image_id in coco.getImgIds():
        info, = coco.loadImgs(image_id)
        class_map = np.asarray(Image.open(
            osp.join(scenes, 'seg_maps', split, info['file_name'])))
        image = np.asarray(Image.open(
            osp.join(scenes, 'images', split, info['file_name'])))
        assert image.shape == (64, 64, 3) and class_map.shape == (64, 64)
        union = np.zeros_like(class_map)
        covered = np.zeros(class_map.shape, bool)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(annotations) <= 4
        for ann in annotations:
            mask = mask_utils.decode(ann['segmentation']).astype(bool)
            assert mask.sum() == ann['area'] >= 40
            assert not (mask & covered).any()
            covered |= mask
            x, y, w, h = ann['bbox']
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
                x, y, x + w, y + h)
            union[mask] = ann['category_id']
        assert (union == class_map).all()
        assert (image[..., 0][~covered] == 0).all()  # background is black


def test_an_item_hidden_below_the_minimum_area_is_removed():
    """Two full squares at the same place: the later one hides the earlier,
    which is dropped; the scene keeps one instance covering the canvas."""
    items = np.full((2, 28, 28), 200, np.uint8)
    scene = compose_scene(items, np.array([3, 5]),
                          np.random.default_rng(0), canvas_size=28,
                          num_items=(2, 2), scale=(1.0, 1.0))
    instance, = scene['instances']
    assert instance['mask'].all() and instance['bbox'] == [0, 0, 28, 28]
    assert set(np.unique(scene['class_map'])) == {instance['label'] + 1}


@pytest.mark.slow
def test_converter_without_fashion_mnist_is_one_line(tmp_path):
    result = run_python(CONVERTER, '--data-root', tmp_path, '--out',
                        tmp_path / 'scenes', check=False,
                        env=dict(PYTHONWARNINGS='ignore'))
    assert result.returncode == 1
    line, = result.stderr.strip().splitlines()
    assert 'dataset-fashion-mnist' in line and '--data-root' in line


@pytest.mark.slow
def test_dense_study_trains_and_tests_both_tasks_and_reports(
        scenes, small_fashion_mnist, tmp_path, capsys):
    """One arm end to end: its pretraining made (shrunk: 2 iterations, and
    its online kNN over 300 images instead of 12,000), UperNet and Mask
    R-CNN trained on it and tested, every metric in result.json, the table
    and the plot written, and --report-only rebuilding the same table."""
    out = tmp_path / 'dense'
    command = [
        STUDY, '--out', out, '--scenes', scenes, '--data-root',
        small_fashion_mnist, '--pretrain-dir', tmp_path / 'pretrain',
        '--arms', 'mae', '--seeds', '0',
        '--pretrain-cfg-options', 'train_cfg.max_iters=2',
        'train_dataloader.batch_size=16', *IN_PROCESS_LOADING,
        '--cfg-options', 'train_cfg.max_iters=2',
        'train_dataloader.batch_size=4', *NO_WORKERS]
    run_python(*command, timeout=900)
    seg = json.load(open(out / 'runs' / 'seg_mae_seed0' / 'result.json'))
    det = json.load(open(out / 'runs' / 'det_mae_seed0' / 'result.json'))
    assert {'mIoU', 'mAcc', 'aAcc'} | {f'IoU.{name}' for name in
                                       SEG_CLASSES} == set(seg['metrics'])
    assert {'bbox_mAP', 'bbox_mAP_50', 'segm_mAP',
            'segm_mAP_50'} <= set(det['metrics'])
    for result in (seg, det):
        assert result['encoder'].endswith('.pth')
        assert result['train_seconds'] > 0 and result['peak_rss_mib'] > 0
        assert result['commit']
    table = (out / 'results.md').read_text()
    assert '| mae | 0 |' in table and (out / 'results.png').stat().st_size
    # the rest needs no new interpreter: the tool's main, in-process
    study = 'analysis_tools/dense_study.py'
    (out / 'results.md').unlink()
    report = call_tool(study, '--out', out, '--report-only', capsys=capsys)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / 'results.md').read_text() == table
    again = call_tool(study, *command[1:], capsys=capsys)
    assert again.stdout.count('done already') == 2  # all done already
    # a run folder is never reused with other options
    (out / 'runs' / 'seg_mae_seed0' / 'result.json').unlink()
    other = call_tool(study, *command[1:-len(NO_WORKERS) - 2],
                      'train_dataloader.batch_size=2', *NO_WORKERS,
                      capsys=capsys)
    assert other.returncode == 1
    assert 'was started with other options' in other.stderr.splitlines()[-1]


@pytest.mark.slow
def test_an_encoder_of_another_size_is_refused(scenes, tmp_path, capsys):
    """Strict loading: a pretraining checkpoint whose encoder does not match
    the study encoder stops the run; it never trains from random weights."""
    from mixedae_mm.models.backbones import MixedAEViT
    other = MixedAEViT(arch=dict(embed_dims=64, num_layers=8, num_heads=4,
                                 feedforward_channels=256),
                       img_size=32, patch_size=4)
    checkpoint = tmp_path / 'other.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in
                                other.state_dict().items()}), checkpoint)
    result = call_tool(
        'train.py', SEG_CONFIG, '--work-dir', tmp_path / 'work',
        '--cfg-options', f'model.backbone.init_cfg.checkpoint={checkpoint}',
        *[f'{loader}.dataset.data_root={scenes}' for loader in (
            'train_dataloader', 'val_dataloader', 'test_dataloader')],
        'train_cfg.max_iters=1', *NO_WORKERS, capsys=capsys)
    assert result.returncode != 0
    assert 'shape' in result.stderr and 'Iter(train)' not in result.stdout


#: the committed dense tables, one a protocol: every training scene, and
#: the first 1,000 of them (docs/results.md, "Dense transfer")
DENSE_TABLES = ('dense', 'dense_1000_scenes')


@pytest.mark.parametrize('folder', DENSE_TABLES)
def test_readme_and_results_quote_the_committed_dense_runs(repo_root,
                                                           folder):
    """docs/results/<folder>/results.md is the table dense_study.py writes
    from the committed runs, and the README's dense numbers and its
    segmentation protocol verdict are theirs."""
    from mixedae_mm.evaluation.dense_study import markdown_table, read_results
    out = osp.join(repo_root, 'docs', 'results', folder)
    results = read_results(out)
    assert results
    with open(osp.join(out, 'results.md')) as f:
        table = f.read()
    assert table == markdown_table(results)
    assert_results_page_shows(table)  # under headings of its own
    readme = readme_sentences()
    for quoted in readme_dense_numbers(results):
        assert quoted in readme
    _readme_segmentation_verdict_holds(results, readme)


def test_every_arm_is_in_both_committed_dense_tables(repo_root):
    """The README's "every arm in docs/results.md": the committed runs of
    the standard protocol cover every study arm on both tasks."""
    from mixedae_mm.evaluation.dense_study import TASKS, read_results
    from mixedae_mm.evaluation.study import ARMS
    results = read_results(osp.join(repo_root, 'docs', 'results', 'dense'))
    for task in TASKS:
        assert {r['arm'] for r in results if r['task'] == task} == set(ARMS)
    assert 'encoders; every arm in [docs/results.md]' in readme_sentences()


#: the arms the README quotes, by its names for them (the one-seed
#: ablation arms are in docs/results.md only)
README_ARMS = dict(scratch='scratch', mae='MAE', mixedae='MixedAE')


def readme_dense_numbers(results):
    """What the README quotes of each arm of each task: its mean over seeds
    and, with several seeds, their range (``18.8 (18.4-19.4)``); box AP /
    mask AP on detection, mIoU on segmentation."""
    from statistics import fmean

    def cell(values):
        if len(values) == 1:
            return f'{values[0]:.1f}'
        return f'{fmean(values):.1f} ({min(values):.1f}-{max(values):.1f})'

    keys = dict(seg=('mIoU', ), det=('bbox_mAP', 'segm_mAP'))
    for task, metrics in keys.items():
        for arm, name in README_ARMS.items():
            if _values(results, task, arm, metrics[0]):
                yield f'{name} ' + ' / '.join(
                    cell(_values(results, task, arm, key)) for key in metrics)



def test_readme_dense_seed_counts_are_the_committed_runs(repo_root):
    """Each task's README sentence names the seeds behind its numbers:
    "scratch <numbers>, 2 seeds; MAE <numbers> and MixedAE <numbers>, 3
    seeds each", counted from the committed runs."""
    from mixedae_mm.evaluation.dense_study import read_results
    results = read_results(osp.join(repo_root, 'docs', 'results', 'dense'))
    quoted = list(readme_dense_numbers(results))  # det's three, seg's three
    assert len(quoted) == 6
    for task, (scratch, mae, mixedae) in zip(('det', 'seg'),
                                             (quoted[:3], quoted[3:])):
        seeds = {arm: len(_values(results, task, arm,
                                  'mIoU' if task == 'seg' else 'bbox_mAP'))
                 for arm in README_ARMS}
        assert seeds['mae'] == seeds['mixedae']
        assert (f'{scratch}, {seeds["scratch"]} seeds; {mae} and {mixedae}, '
                f'{seeds["mae"]} seeds each') in readme_sentences()

def _values(results, task, arm, key):
    return [r['metrics'][key] for r in results
            if r['task'] == task and r['arm'] == arm]


def _readme_segmentation_verdict_holds(results, readme):
    """MAE's lead over scratch, the seed spread and the verdict
    (protocol_check), computed from the committed runs."""
    from statistics import fmean

    from mixedae_mm.evaluation.dense_study import protocol_check
    mae, scratch = (_values(results, 'seg', arm, 'mIoU')
                    for arm in ('mae', 'scratch'))
    spread = max(max(v) - min(v) for v in (mae, scratch))
    assert protocol_check(mae, scratch) is False
    assert (f"MAE's lead over scratch ({fmean(mae) - fmean(scratch):+.1f}) "
            f'is smaller than the seed spread ({spread:.1f}): the protocol '
            'check fails') in readme


def test_readme_detection_claims_are_the_committed_runs(repo_root):
    """The README's detection sentences: MAE's lead over scratch and its
    verdict, the box-AP interval including 0, and MixedAE minus MAE with
    its intervals, all computed from the committed runs."""
    from statistics import fmean

    from mixedae_mm.evaluation.dense_study import protocol_check, read_results
    from mixedae_mm.evaluation.seed_stats import welch_interval
    results = read_results(osp.join(repo_root, 'docs', 'results', 'dense'))
    readme = readme_sentences()
    mae, scratch = (_values(results, 'det', arm, 'bbox_mAP')
                    for arm in ('mae', 'scratch'))
    assert protocol_check(mae, scratch) is True
    interval = welch_interval(mae, scratch)
    assert interval['low'] <= 0 <= interval['high']
    assert ('leads scratch by more than the seed spread '
            f'({fmean(mae) - fmean(scratch):+.1f} box AP), but the 95% '
            f'interval ({len(mae)} MAE and {len(scratch)} scratch seeds) '
            'includes 0') in readme
    mae_mask = welch_interval(*(_values(results, 'det', arm, 'segm_mAP')
                                for arm in ('mae', 'scratch')))
    assert mae_mask['low'] > 0
    assert (f'on mask AP ({mae_mask["difference"]:+.2f}) it excludes 0 '
            f'({mae_mask["low"]:+.1f} to {mae_mask["high"]:+.1f})') in readme
    box, mask = (welch_interval(_values(results, 'det', 'mixedae', key),
                                _values(results, 'det', 'mae', key))
                 for key in ('bbox_mAP', 'segm_mAP'))
    assert (f'MixedAE leads MAE by {box["difference"]:+.2f} box AP (95% '
            f'Welch interval {box["low"]:.1f} to {box["high"]:+.1f}) and '
            f'{mask["difference"]:+.2f} mask AP ({mask["low"]:.1f} to '
            f'{mask["high"]:+.1f}): this size cannot tell them apart (about '
            f'{box["seeds_to_resolve"]} seeds a side would') in readme
    assert box['low'] < 0 < box['high'] and mask['low'] < 0 < mask['high']


def test_a_finished_run_of_another_protocol_is_not_skipped_as_this_one(
        tmp_path):
    """A finished run made with other --cfg-options (another protocol) stops
    the study instead of being counted in its table; the same options skip
    it as done."""
    from mixedae_mm.evaluation.dense_study import run_transfer
    from mixedae_mm.evaluation.pretraining import RunFolderMismatchError
    run_dir = tmp_path / 'runs' / 'seg_mae_seed0'
    run_dir.mkdir(parents=True)
    (run_dir / 'result.json').write_text(json.dumps(
        dict(task='seg', arm='mae', seed=0, cfg_options=[])))
    logged = []
    run = dict(out=str(tmp_path), scenes=str(tmp_path), commit='x',
               log=logged.append)
    run_transfer('mae', 0, 'seg', None, cfg_options=[], **run)
    assert 'done already' in logged[-1]
    with pytest.raises(RunFolderMismatchError, match='their own --out folder'):
        run_transfer('mae', 0, 'seg', None,
                     cfg_options=['train_dataloader.dataset.indices=1000'],
                     **run)


def test_the_table_names_its_protocol_and_never_mixes_two():
    from mixedae_mm.evaluation.dense_study import markdown_table

    def result(arm, seed, options):
        return dict(task='seg', arm=arm, seed=seed, cfg_options=options,
                    metrics=dict(mIoU=30.0 + seed, mAcc=40.0, aAcc=80.0),
                    train_seconds=600.0, peak_rss_mib=1600.0)
    fewer = ['train_dataloader.dataset.indices=1000']
    table = markdown_table([result('mae', 0, fewer), result('mae', 1, fewer)])
    assert ('Runs made with `--cfg-options '
            'train_dataloader.dataset.indices=1000`.') in table
    assert 'Runs made with' not in markdown_table([result('mae', 0, [])])
    with pytest.raises(ValueError, match='its own --out folder'):
        markdown_table([result('mae', 0, fewer), result('scratch', 0, [])])


def test_welch_interval_is_scipys():
    """The interval the dense table reports is Welch's, as scipy computes
    it; the seed count it suggests resolves a difference of that size."""
    from scipy import stats

    from mixedae_mm.evaluation.seed_stats import welch_interval
    a, b = [38.9, 37.1, 39.4], [36.8, 35.2]
    interval = welch_interval(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert interval['low'] == pytest.approx(reference.low)
    assert interval['high'] == pytest.approx(reference.high)
    assert interval['low'] < 0 < interval['high']
    assert interval['seeds_to_resolve'] > 3
    assert welch_interval(a, [36.8]) is None


def test_protocol_check_asks_for_more_than_the_seed_spread():
    from mixedae_mm.evaluation.dense_study import protocol_check
    scratch = [33.1, 34.6]  # spread 1.5
    assert protocol_check([36.8, 36.0], scratch) is True  # +2.55
    assert protocol_check([36.8, 33.0], scratch) is False  # spread 3.8
    assert protocol_check([35.0, 35.4], scratch) is False  # +1.35 < 1.5
    assert protocol_check([36.8], scratch) is None


def test_a_drawn_sample_is_left_as_it_was():
    """The picture tool draws a sample twice (ground truth, prediction):
    scaling a copy must not scale the original's instances, or the second
    drawing's masks no longer fit the image (mmdet's visualizer refused
    them)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mixedae_mm.visualization.dense import UPSCALE, _upscaled
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[1., 2., 10., 12.]]),
        masks=torch.zeros(1, 64, 64, dtype=torch.bool),
        scores=torch.tensor([0.9]), labels=torch.tensor([3]))
    first = _upscaled(sample, 'det')
    second = _upscaled(sample, 'det')
    assert sample.pred_instances.masks.shape == (1, 64, 64)
    assert sample.pred_instances.bboxes[0, 2] == 10.
    for drawn in (first, second):
        assert drawn.pred_instances.masks.shape == (1, 64 * UPSCALE,
                                                    64 * UPSCALE)
