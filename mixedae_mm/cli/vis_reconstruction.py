"""Save PNG grids of what a MixedAE checkpoint reconstructs.

    mixedae-vis-reconstruction CONFIG CHECKPOINT \
        IMG_OR_DIR [IMG_OR_DIR ...] --out DIR [--seed 0] [--device cpu]

(in a clone: ``python tools/visualization/vis_reconstruction.py ...``;
CONFIG may be a recipe's name, e.g. ``mixedae_vit-tiny-p8_demo``.)

Images are taken in the order given (a folder: its image files, sorted) and
mixed in groups of the model's group size G (4); a short last group is
filled by repeating images from the start. One ``group_<i>.png`` per group,
rows as in ``mixedae_mm.visualization.ROW_NAMES`` (named in the picture),
columns headed by the file names.
"""
import argparse
import os
import os.path as osp

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def common_parser(doc: str, seed_help: str,
                  prog=None) -> argparse.ArgumentParser:
    """The arguments every picture tool takes."""
    from ..cli_args import (config_file_or_recipe, existing_file,
                            non_negative_int)
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.splitlines()[0])
    parser.add_argument('config', type=config_file_or_recipe,
                        help='config file or recipe name')
    parser.add_argument('checkpoint', type=existing_file)
    parser.add_argument('images', nargs='+', help='image files or folders')
    parser.add_argument('--out', required=True, help='folder for the PNGs')
    parser.add_argument('--seed', type=non_negative_int, default=0,
                        help=seed_help)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--scale', type=non_negative_int, default=0,
                        help='cell upscaling; 0: to at least 128 px')
    return parser


def load_model(config, checkpoint, device='cpu'):
    """``(model in eval mode, its config's test pipeline)``; exits with the
    mismatch when ``checkpoint`` does not fit the config's model (a picture
    of random weights would look like a result)."""
    from mmengine.config import Config
    from mmpretrain.apis import get_model

    import mixedae_mm  # noqa: F401  (get_model loads our models strictly)
    from mixedae_mm import visualization as vis
    from mixedae_mm.checkpoints import CheckpointError

    from . import resolve_config
    cfg = Config.fromfile(resolve_config(config)) if isinstance(
        config, str) else config
    pipeline = vis.test_pipeline_of(cfg)
    try:
        model = get_model(cfg, pretrained=checkpoint, device=device)
    except (CheckpointError, FileNotFoundError) as error:
        # a mismatch, or a file that is no checkpoint
        raise SystemExit(f'error: {error}') from None
    return model, pipeline


def load_model_and_images(args):
    """``(model, test pipeline, image paths padded to whole groups)``;
    prints a note when images are repeated to fill the last group."""
    from mixedae_mm import visualization as vis

    paths = image_paths(args.images)  # before the model: bad files fail fast
    model, pipeline = load_model(args.config, args.checkpoint, args.device)
    group_size = model.backbone.group_size
    padded = vis.pad_to_groups(paths, group_size)
    if len(padded) > len(paths):
        print(f'note: {len(paths)} images are not a multiple of the group '
              f'size {group_size}; repeating {len(padded) - len(paths)} '
              'from the start to fill the last group')
    return model, pipeline, padded


def parse_args(argv=None, prog=None):
    parser = common_parser(__doc__,
                           'seed of the mixing partition / MAE mask', prog)
    parser.add_argument('--pixel-stats', default='target',
                        choices=('target', 'visible'),
                        help="norm_pix inverse: each patch's true mean/var "
                        "(target, as MAE's demo) or the visible patches' "
                        '(visible: nothing hidden leaks)')
    return parser.parse_args(argv)


def image_paths(inputs):
    """The image files named by ``inputs`` (files, or folders searched for
    image suffixes), each checked to decode as an image."""
    paths = []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(
                osp.join(root, name) for root, _, names in os.walk(item)
                for name in names if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise SystemExit(f'error: no image files in folder {item}')
            paths += found
        elif osp.isfile(item):
            paths.append(item)
        else:
            raise SystemExit(f'error: {item} is neither a file nor a folder')
    for path in paths:
        check_image(path)
    return paths


def check_image(path: str) -> None:
    """Exit with one line naming ``path`` unless it decodes as an image
    (an image suffix does not make a file an image)."""
    import mmcv
    try:
        decoded = mmcv.imread(path) is not None
    except Exception:  # decoders raise anything on bad bytes
        decoded = False
    if not decoded:
        size = osp.getsize(path)
        what = 'is empty (0 bytes)' if size == 0 else \
            f'holds {size} bytes that do not decode as an image'
        raise SystemExit(f'error: {path} {what}: give image files')


def save_reconstructions(model, pipeline, paths, out, seed=0, scale=0,
                         pixel_stats='target', name='group_{}.png'):
    """Write one grid per group of ``paths`` (a multiple of the group size)
    as ``out/name.format(group index)``; print and return the paths."""
    import torch
    from PIL import Image

    from mixedae_mm import visualization as vis

    if not vis.can_reconstruct(model):
        raise SystemExit(f'error: {type(model).__name__} has no reconstruct; '
                         'give a MixedAE pretraining config')
    group_size = model.backbone.group_size
    os.makedirs(out, exist_ok=True)
    written = []
    for first in range(0, len(paths), group_size):
        group = paths[first:first + group_size]
        with torch.no_grad():
            inputs = vis.load_inputs(group, pipeline, model)
        picture, = vis.render(model, inputs, seed=seed,
                              scale=scale or vis.cell_scale(inputs),
                              pixel_stats=pixel_stats,
                              image_names=[osp.basename(p) for p in group])
        path = osp.join(out, name.format(first // group_size))
        Image.fromarray(picture.image).save(path)
        written.append(path)
        print(f'{path}: ' + ', '.join(osp.basename(p) for p in group))
    return written


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    model, pipeline, padded = load_model_and_images(args)
    return save_reconstructions(model, pipeline, padded, args.out,
                                seed=args.seed, scale=args.scale,
                                pixel_stats=args.pixel_stats)


def console_main():
    """``mixedae-vis-reconstruction``."""
    main(prog='mixedae-vis-reconstruction')


if __name__ == '__main__':
    main()
