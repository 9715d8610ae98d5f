"""The three pictures of a finished pretraining run, from its work dir.

    python tools/visualization/demo_figures.py WORK_DIR --out DIR \
        [--config CONFIG] [--device cpu]

Takes the checkpoint named by ``WORK_DIR/last_checkpoint``, the config the
run dumped into ``WORK_DIR`` (or ``--config``) and a fixed set of training
images (one group of G, evenly spaced over the training set, so
different photos), and writes with fixed seeds:

- ``DIR/demo_reconstruction.png`` (``vis_reconstruction.py``),
- ``DIR/demo_homologous_attention.png`` (``vis_homologous_attention.py``),
- ``DIR/demo_curves.png`` (``tools/analysis_tools/plot_log.py``),

then prints the checkpoint and the three paths. ``tools/run_demo.sh`` ends
with it (``--out WORK_DIR/figures``); the pictures in ``docs/images/`` come
from ``python tools/visualization/demo_figures.py work_dirs/demo --out
docs/images``.
"""
import argparse
import glob
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'demo_figures.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.cli.vis_homologous_attention import save_attention
from mixedae_mm.cli.vis_reconstruction import load_model, save_reconstructions
from mixedae_mm.visualization.curves import find_scalars, plot

SEED = 0  # mixing partition of both pictures
NAMES = ('demo_reconstruction.png', 'demo_homologous_attention.png',
         'demo_curves.png')


def parse_args(argv=None):
    from mixedae_mm.cli_args import existing_file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', help='work dir of a finished run')
    parser.add_argument('--out', required=True, help='folder for the PNGs')
    parser.add_argument('--config', default=None, type=existing_file,
                        help="default: the config the run dumped into "
                        'WORK_DIR')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint ``WORK_DIR/last_checkpoint`` names (as written, or
    found next to it when the run was started from another folder)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise SystemExit(
            f'error: no {pointer}: give the work dir of a run that saved a '
            'checkpoint (CheckpointHook interval <= max_iters)')
    with open(pointer) as f:
        named = f.read().strip()
    for path in (named, osp.join(work_dir, osp.basename(named))):
        if osp.isfile(path):
            return path
    raise SystemExit(f'error: {pointer} names {named}, which does not exist')


def dumped_config(work_dir: str) -> str:
    """The config the runner dumped into the work dir (the newest)."""
    found = sorted(glob.glob(osp.join(work_dir, '*.py')), key=osp.getmtime)
    if not found:
        raise SystemExit(f'error: no config (*.py) in {work_dir}: give '
                         '--config CONFIG')
    return found[-1]


def demo_images(cfg, count: int):
    """``count`` training images of ``cfg`` evenly spaced over its training
    set (crops of different photos in the demo set), as the training hook
    picks them."""
    from mmpretrain.registry import DATASETS

    from mixedae_mm.visualization import spread_image_paths
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    if len(dataset) < count:
        raise SystemExit(f'error: {len(dataset)} training images; the '
                         f'pictures need {count} (one group)')
    return spread_image_paths(dataset, count)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    checkpoint = last_checkpoint(args.work_dir)
    cfg = Config.fromfile(args.config or dumped_config(args.work_dir))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model, pipeline = load_model(cfg, checkpoint, args.device)
    images = demo_images(cfg, model.backbone.group_size)
    reconstruction, = save_reconstructions(
        model, pipeline, images, args.out, seed=SEED, name=NAMES[0])
    attention, = save_attention(model, pipeline, images, args.out, seed=SEED,
                                name=NAMES[1])
    curves = plot(find_scalars(args.work_dir), osp.join(args.out, NAMES[2]),
                  group_size=model.backbone.group_size)
    written = [reconstruction, attention, curves]
    print(f'checkpoint: {checkpoint}')
    for what, path in zip(('reconstructions', 'homologous attention',
                           'curves'), written):
        print(f'{what}: {path}')
    return written


if __name__ == '__main__':
    sys.exit(main() and 0)
