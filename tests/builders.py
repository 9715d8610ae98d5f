"""What several test modules build: small data sets in the real layouts,
the shipped recipes shrunk through ``--cfg-options``, and the command
runners of the training tools. Test modules import from here (and from
conftest), never from one another."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from conftest import IN_PROCESS_LOADING, ROOT


# ------------------------------------------------------------ recipe lists
def recipe_configs():
    """Every config a user runs by name: all of configs/ but the _base_
    parts and the small-scale study's family (configs/study/, run by
    ablation_study.py and reported in docs/results.md), of which only the
    encoders with published weights (configs/study/metafile.yml) are
    models."""
    import yaml
    published = [entry['Config'] for entry in yaml.safe_load(open(osp.join(
        ROOT, 'configs/study/metafile.yml')))['Models']]
    return sorted(published + [
        osp.relpath(p, ROOT)
        for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                           recursive=True)
        if not {'_base_', 'study'} & set(
            osp.relpath(p, ROOT).split(os.sep)[:-1])])


#: the small-scale study's pretrainings shrunk to 2 iterations of 16 images
SHRUNK = ['train_cfg.max_iters=2', 'train_dataloader.batch_size=16',
          *IN_PROCESS_LOADING]


# ----------------------------------------------------------------- ImageNet
def tiny_imagenet(root, per_class=4, classes=2, size=72):
    """OpenMMLab's ImageNet layout, train and val: class 0 dark, class 1
    bright (learnable, not trivial)."""
    from mixedae_mm.datasets import make_imagenet_folder
    return make_imagenet_folder(root, classes=classes, per_class=per_class,
                                size=size, splits=('train', 'val'),
                                style='by-class')


def pretraining_imagenet(root, classes=2, per_class=4, size=240):
    """The train split alone, smooth images: what the pretraining recipes
    read (the GPU check trains on the same kind of folder)."""
    from mixedae_mm.datasets import make_imagenet_folder
    return make_imagenet_folder(root, classes=classes, per_class=per_class,
                                size=size, style='smooth')


#: the ImageNet fine-tune and linear-probe recipes (mmpretrain)
CLS_FINETUNE = 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'
CLS_LINEAR = 'configs/finetune/mixedae_vitb_linear-90e_in1k.py'


def cls_overrides(config, checkpoint, data_root, crop=64):
    """Shrink a ViT-B recipe to the demo encoder and a 64px crop."""
    overrides = {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': crop,
        'model.backbone.patch_size': 8,
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.head.in_channels': 192,
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.batch_size': 4,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
    }
    if config == CLS_LINEAR:
        overrides['model.backbone.frozen_stages'] = 6  # all demo layers
        overrides['model.neck.input_features'] = 192
    return overrides


# ------------------------------------------------------------------ ADE20K
#: the UperNet recipe (mmseg)
SEG_CONFIG = 'configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py'


def tiny_ade20k(root, per_split=(4, 2), size=(72, 96)):
    """ADE20K's layout: ``images/{training,validation}/*.jpg`` and
    ``annotations/...png`` label maps where 0 is "other" (dropped by
    ``reduce_zero_label``) and 1..150 are classes."""
    rng = np.random.default_rng(0)
    colours = {1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200)}
    height, width = size
    for split, count in zip(('training', 'validation'), per_split):
        os.makedirs(osp.join(root, 'images', split))
        os.makedirs(osp.join(root, 'annotations', split))
        for i in range(count):
            label = np.zeros(size, np.uint8)
            for cls in colours:
                top, left = rng.integers(0, height // 2), rng.integers(
                    0, width // 2)
                label[top:top + height // 2, left:left + width // 2] = cls
            image = rng.integers(0, 40, (*size, 3)).astype(np.uint8)
            for cls, colour in colours.items():
                image[label == cls] += np.array(colour, np.uint8)
            name = f'ADE_{split}_{i:08d}'
            Image.fromarray(image).save(
                osp.join(root, 'images', split, name + '.jpg'))
            Image.fromarray(label).save(
                osp.join(root, 'annotations', split, name + '.png'))
    return root


def seg_overrides(checkpoint, data_root, crop=64):
    """Shrink the ViT-B/512 recipe to the demo encoder and 64px crops."""
    return {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': crop,
        'model.backbone.patch_size': 8,
        'model.backbone.out_indices': [1, 2, 3, 5],
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.data_preprocessor.size': (crop, crop),
        'model.neck.embed_dim': 192,
        'model.decode_head.in_channels': [192] * 4,
        'model.decode_head.channels': 32,
        'model.auxiliary_head.in_channels': 192,
        'model.auxiliary_head.channels': 32,
        'model.test_cfg.crop_size': (crop, crop),
        'model.test_cfg.stride': (crop * 2 // 3, crop * 2 // 3),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.pipeline.2.scale': (crop * 4, crop),
        'train_dataloader.dataset.pipeline.3.crop_size': (crop, crop),
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.pipeline.1.scale': (crop * 4, crop),
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.pipeline.1.scale': (crop * 4, crop),
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
    }


# -------------------------------------------------------------------- COCO
#: the Mask R-CNN recipes (mmdet)
DET_LONG = 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py'
DET_SHORT = 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py'
DET_CLASSES = ('square', 'triangle')


def _shape(kind, x, y, size):
    """A polygon (flat COCO list) of a square or a triangle at ``(x, y)``."""
    if kind == 'square':
        return [x, y, x + size, y, x + size, y + size, x, y + size]
    return [x + size / 2, y, x + size, y + size, x, y + size]


def _polygon_area(flat):
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i]
                   for i in range(len(xs)))) / 2


def tiny_coco(root, num_train=2, num_val=2):
    """COCO's layout: ``<split>/*.jpg`` + ``annotations/instances_<split>.
    json`` with polygon masks; 1-3 red squares / blue triangles per image on
    a noisy grey background, images of 96-128 pixels."""
    gen = torch.Generator().manual_seed(0)
    os.makedirs(osp.join(root, 'annotations'))
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(DET_CLASSES)]
    colours = {'square': (220, 40, 40), 'triangle': (40, 60, 220)}
    ann_id = 0
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, split))
        images, annotations = [], []
        for i in range(count):
            w, h = 128 - 16 * (i % 3), 96 + 16 * (i % 3)
            noise = torch.randint(90, 150, (h, w, 3), generator=gen)
            img = Image.fromarray(noise.to(torch.uint8).numpy())
            draw = ImageDraw.Draw(img)
            image_id = len(images) + 1
            for j in range(1 + i % 3):
                kind = DET_CLASSES[(i + j) % 2]
                size = 20 + 4 * j  # side by side, inside even 96 px
                x, y = 4 + 30 * j, 8 + 12 * j
                poly = _shape(kind, float(x), float(y), float(size))
                draw.polygon(poly, fill=colours[kind])
                ann_id += 1
                annotations.append(
                    dict(id=ann_id, image_id=image_id,
                         category_id=DET_CLASSES.index(kind) + 1,
                         segmentation=[poly], area=_polygon_area(poly),
                         bbox=[x, y, size, size], iscrowd=0))
            name = f'{split}_{i:04d}.jpg'
            img.save(osp.join(root, split, name), quality=95)
            images.append(dict(id=image_id, file_name=name, width=w,
                               height=h))
        with open(osp.join(root, 'annotations',
                           f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
    return root


def det_overrides(checkpoint, data_root, image=128):
    """Shrink the ViT-B recipe: the demo encoder (192 dims, 6 blocks,
    patch 8), 4x4 windows with blocks 2 and 5 global (ViT-B: every third
    block), a stride-8 map whose pyramid keeps strides 4-32, 2 classes."""
    data_root = str(data_root)
    overrides = {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
        'model.backbone.window_size': 4,
        'model.backbone.global_attn_indexes': [2, 5],
        'model.backbone.out_indices': (5, ),
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.neck.in_channels': 192,
        'model.neck.scale_factors': (2.0, 1.0, 0.5, 0.25),
        'model.roi_head.bbox_head.num_classes': len(DET_CLASSES),
        'model.roi_head.mask_head.num_classes': len(DET_CLASSES),
        'model.data_preprocessor.pad_size_divisor': image,  # 1024 -> 128
        # fewer proposals and RoIs: a CPU test, not a recipe
        'model.train_cfg.rpn_proposal.max_per_img': 200,
        'model.train_cfg.rcnn.sampler.num': 64,
        'model.test_cfg.rpn.max_per_img': 100,
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.times': 1,
        'train_dataloader.dataset.dataset.data_root': data_root,
        'train_dataloader.dataset.dataset.ann_file':
        'annotations/instances_train.json',
        'train_dataloader.dataset.dataset.data_prefix.img': 'train/',
        'train_dataloader.dataset.dataset.metainfo.classes': DET_CLASSES,
        'train_dataloader.dataset.dataset.pipeline.2.scale': (image, image),
        'train_dataloader.dataset.dataset.pipeline.3.crop_size':
        (image, image),
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'randomness.seed': 0,
    }
    for loader in ('val', 'test'):
        prefix = f'{loader}_dataloader.'
        overrides.update({
            prefix + 'num_workers': 0,
            prefix + 'persistent_workers': False,
            prefix + 'dataset.data_root': data_root,
            prefix + 'dataset.ann_file': 'annotations/instances_val.json',
            prefix + 'dataset.data_prefix.img': 'val/',
            prefix + 'dataset.metainfo.classes': DET_CLASSES,
            prefix + 'dataset.pipeline.1.scale': (image, image),
        })
        overrides[f'{loader}_evaluator.ann_file'] = osp.join(
            data_root, 'annotations', 'instances_val.json')
    return overrides


# ------------------------------------------------- pretraining on the CPU
#: the epoch-based ViT-B pretraining recipe the resume tests shrink
RECIPE = 'configs/mixedae_vitb_1600e.py'


def tiny_recipe_overrides(data_root):
    """configs/mixedae_vitb_1600e.py shrunk: tiny ViT, 64 px, 8 images,
    batch 4 (2 iterations per epoch), 3 epochs, 2 workers (persistent, as
    shipped)."""
    return [
        'model.backbone.arch=demo-tiny', 'model.backbone.img_size=64',
        'model.backbone.patch_size=8', 'model.neck.decoder_embed_dim=64',
        'model.neck.decoder_depth=1', 'model.neck.decoder_num_heads=2',
        f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.dataset.split=train',
        'train_dataloader.dataset.pipeline.1.scale=64',
        'train_dataloader.batch_size=4', 'train_dataloader.num_workers=2',
        'train_cfg.max_epochs=3', 'default_hooks.logger.interval=1',
    ]


def run_command(cmd, cwd, timeout=600, env=None):
    """``cmd`` to its end, output captured; the exit status is the
    caller's to check."""
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **(env or {})))


def train_recipe(repo_root, config, work, overrides, *extra):
    """``tools/train.py config`` in a new process that also imports the
    hooks of tests/helpers (kill_hook, signal_hook, ...)."""
    env = {'PYTHONPATH': os.pathsep.join(
        [osp.join(repo_root, 'tests', 'helpers'), repo_root]),
        'OMP_NUM_THREADS': '1'}
    return run_command([sys.executable, 'tools/train.py', config,
                        '--work-dir', str(work), *extra, '--cfg-options'] +
                       overrides, cwd=repo_root, env=env)


def assert_same_training_state(path_a, path_b):
    """The weights and Adam's first moments of two checkpoints agree (to
    1e-6): a resumed run ended where the uninterrupted one did."""
    a = torch.load(path_a, map_location='cpu')
    b = torch.load(path_b, map_location='cpu')
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=0,
                                   atol=1e-6, msg=key)
    for idx, state in a['optimizer']['state'].items():
        torch.testing.assert_close(b['optimizer']['state'][idx]['exp_avg'],
                                   state['exp_avg'], rtol=0, atol=1e-6)


# ------------------------------------------------------- study pretrainings
def finished_pretraining(work_dir, state_dict, iteration=2):
    """A pretraining folder as ``evaluation.pretraining.run_pretraining``
    leaves a finished one (checkpoint, ``last_checkpoint``, ``timing.json``
    marked done), holding ``state_dict``; returns the checkpoint's path."""
    os.makedirs(work_dir, exist_ok=True)
    checkpoint = osp.join(work_dir, f'iter_{iteration}.pth')
    torch.save(dict(state_dict=state_dict), checkpoint)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(checkpoint)
    with open(osp.join(work_dir, 'timing.json'), 'w') as f:
        json.dump(dict(seconds=1., peak_rss_mib=1., attempts=1, done=True), f)
    return checkpoint
