"""Save PNG grids of the keys homologous attention selects.

    mixedae-vis-attention CONFIG CHECKPOINT \
        IMG_OR_DIR [IMG_OR_DIR ...] --out DIR [--seed 0] [--device cpu]

(in a clone: ``python tools/visualization/vis_homologous_attention.py
...``.) Images are grouped as in ``mixedae-vis-reconstruction``. One
``attention_<i>.png`` per mixed image: rows are the homologous-attention
layers (labelled with the layer's homologous share), columns one query
patch per source image (outlined in the source's colour, headed by the file
name); the mixed image is darkened except at the keys the query selected
(brighter = more heads), each cell captioned with the query's homologous
share. Prints, per layer, the fraction of selected keys that are
homologous (chance: 1/G).
"""
import os
import os.path as osp

from .vis_reconstruction import common_parser, load_model_and_images


def parse_args(argv=None, prog=None):
    return common_parser(__doc__, 'seed of the mixing partition',
                         prog).parse_args(argv)


def save_attention(model, pipeline, paths, out, seed=0, scale=0,
                   name='attention_{}.png'):
    """Write one grid per mixed image of ``paths`` (a multiple of the group
    size) as ``out/name.format(mixed index)``; print and return the
    paths."""
    import torch
    from PIL import Image

    from mixedae_mm import visualization as vis

    group_size = model.backbone.group_size
    with torch.no_grad():
        inputs = vis.load_inputs(paths, pipeline, model)
    pictures, precision = vis.homologous_attention_grids(
        model, inputs, seed=seed, scale=scale or vis.cell_scale(inputs),
        image_names=[osp.basename(p) for p in paths])
    os.makedirs(out, exist_ok=True)
    layers = model.backbone.homo_attn_layers
    written = []
    for index, picture in enumerate(pictures):
        path = osp.join(out, name.format(index))
        Image.fromarray(picture.image).save(path)
        written.append(path)
        shares = ', '.join(f'l{layer} {p:.2f}' for layer, p in zip(
            layers, precision[index].mean(dim=1).tolist()))
        print(f'{path}: homologous share of the picks {shares} '
              f'(chance {1 / group_size:g})')
    return written


def check_config(cfg, config: str) -> None:
    """Exit with one line, before anything is loaded, unless ``cfg`` is a
    MixedAE pretraining config with homologous attention to draw."""
    from . import pretraining_config_refusal
    refusal = pretraining_config_refusal(cfg, config)
    if refusal:
        raise SystemExit(f'error: {refusal}')
    model = cfg.model
    ablation = model.get('ablation', 'none')
    if ablation in ('mae', 'naive_mixing') or \
            model.get('backbone', {}).get('homo_attn_layers', None) == []:
        raise SystemExit(
            f'error: {config} has no homologous attention to draw '
            f'(model.ablation={ablation!r}): give a MixedAE pretraining '
            "config with it (ablation 'none' or 'homo_attn_only')")


def main(argv=None, prog=None):
    from mmengine.config import Config

    from . import resolve_config
    args = parse_args(argv, prog)
    given, args.config = args.config, Config.fromfile(
        resolve_config(args.config))
    check_config(args.config, given)
    model, pipeline, padded = load_model_and_images(args)
    return save_attention(model, pipeline, padded, args.out, seed=args.seed,
                          scale=args.scale)


def console_main():
    """``mixedae-vis-attention``."""
    main(prog='mixedae-vis-attention')


if __name__ == '__main__':
    main()
