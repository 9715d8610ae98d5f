"""The study encoders published in weights/ (MAE and MixedAE, seed 0 of the
small-scale study): they load by name, offline, and still know what they
learned (a regression test between the released weights and today's model
code)."""
import os.path as osp

import pytest
import torch
import yaml
from conftest import ROOT, load_tool

from mixedae_mm.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mixedae_mm.evaluation.probes import encode
from mixedae_mm.evaluation.study import balanced_subset, knn_top1, preprocess

PUBLISHED = [entry['Name'] for entry in yaml.safe_load(open(osp.join(
    ROOT, 'configs/study/metafile.yml')))['Models']]


@pytest.fixture(scope='module')
def fashion_mnist():
    """A class-balanced bank of 2,000 training images and the first 1,000
    test images."""
    train, train_labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, 'train')
    bank = balanced_subset(train_labels, 200)
    test, test_labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, 'test')
    return train[bank], train_labels[bank], test[:1000], test_labels[:1000]


def _knn_top1(model, fashion_mnist):
    train, train_labels, test, test_labels = fashion_mnist
    cfg = model._config
    features = [encode(model.backbone, preprocess(images, cfg, model))['cls']
                for images in (train, test)]
    return knn_top1(features[0], train_labels, features[1], test_labels)


@pytest.mark.slow
@pytest.mark.parametrize('name', PUBLISHED)
def test_published_encoder_loads_by_name_and_beats_a_random_one(
        name, fashion_mnist):
    from mmpretrain import get_model
    torch.manual_seed(0)
    random = get_model(name)
    random.init_weights()
    published = get_model(name, pretrained=True)
    for tensor in published.state_dict().values():
        assert tensor.dtype != torch.float16  # cast to the model's dtype
    assert _knn_top1(published, fashion_mnist) >= _knn_top1(
        random, fashion_mnist) + 10


@pytest.mark.slow
@pytest.mark.parametrize('name', PUBLISHED)
def test_feature_extractor_runs_on_the_published_encoder(name,
                                                         fashion_mnist):
    from mmpretrain.apis import FeatureExtractor
    extractor = FeatureExtractor(name, pretrained=True)
    image = fashion_mnist[2][0].numpy()[..., None].repeat(3, -1)
    features, = extractor(image)
    assert torch.isfinite(features[-1]).all()


def test_eval_study_encoder_refuses_a_model_without_weights():
    """Without --checkpoint, a model with no published weights would be
    evaluated at its random initialisation: one line instead."""
    main = load_tool('analysis_tools/eval_study_encoder.py').main
    with pytest.raises(SystemExit, match='has no published weights: pass '
                       '--checkpoint'):
        main(['configs/study/naive-mixing_vit-study-p4_fmnist.py'])


@pytest.mark.slow
def test_the_picture_tools_draw_the_published_encoders(fashion_mnist,
                                                       tmp_path):
    """The study configs' test pipeline reads images from memory; image
    files given to the picture tools are read for it (as the inferencers
    do)."""
    from PIL import Image

    from mixedae_mm.cli import vis_homologous_attention, vis_reconstruction
    from mmpretrain.apis.model import ModelHub
    images = tmp_path / 'images'
    images.mkdir()
    for index, image in enumerate(fashion_mnist[2][:4].numpy()):
        Image.fromarray(image).save(images / f'{index}.png')
    weights = {name: ModelHub._models_dict[name].weights
               for name in PUBLISHED}
    for name in PUBLISHED:
        vis_reconstruction.main([name, weights[name], str(images),
                                 '--out', str(tmp_path / name)])
        assert (tmp_path / name / 'group_0.png').stat().st_size > 0
    for name in [n for n in PUBLISHED if n.startswith('mixedae')]:
        vis_homologous_attention.main([name, weights[name], str(images),
                                       '--out', str(tmp_path / 'attention')])
        assert list((tmp_path / 'attention').glob('*.png'))
