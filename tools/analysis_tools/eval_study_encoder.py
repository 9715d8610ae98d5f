"""One encoder of the Fashion-MNIST study evaluated with the study's
protocol (kNN on the cls and the mean token, linear probe, fine-tune),
loaded as a user loads it: ``get_model(name, pretrained=...)``.

    python tools/analysis_tools/eval_study_encoder.py \\
        mixedae_vit-study-p4_fmnist --out result.json
    python tools/analysis_tools/eval_study_encoder.py \\
        configs/study/mae-ours_vit-study-p4_fmnist.py \\
        --checkpoint work_dirs/study/runs/mae_seed0/pretrain/iter_2808.pth

Without ``--checkpoint`` the model index's published weights are loaded
(the numbers of ``configs/study/metafile.yml`` come from this command).
The images and settings are ``ablation_study.py``'s defaults, so the
numbers compare with ``docs/results.md``'s table.
"""
import argparse
import json
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'eval_study_encoder.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)


def parse_args(argv=None):
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='recipe name or study config file')
    parser.add_argument('--checkpoint', default=None,
                        help='default: the published weights of MODEL')
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST)
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the linear probe and the fine-tune')
    parser.add_argument('--out', default=None, help='write the metrics here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmpretrain import get_model

    import mixedae_mm  # noqa: F401  (the model index, strict loading)
    from mixedae_mm.checkpoints import CheckpointError
    from mixedae_mm.evaluation.study import (evaluate_on_study_data,
                                             load_study_data)
    from mmpretrain.apis.model import ModelHub
    published = getattr(ModelHub._models_dict.get(args.model.lower()),
                        'weights', None)
    if args.checkpoint is None and not published:
        # get_model(pretrained=True) would warn and go on with random weights
        raise SystemExit(f'eval_study_encoder.py: error: {args.model} has no '
                         'published weights: pass --checkpoint')
    try:
        data = load_study_data(args.data_root)
        model = get_model(args.model, pretrained=args.checkpoint or True)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f'eval_study_encoder.py: error: {err}') from None
    result = evaluate_on_study_data(model, model._config, data,
                                    finetune_epochs=10, seed=args.seed)
    result.update(model=args.model, checkpoint=args.checkpoint,
                  torch_threads=torch.get_num_threads())
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items()
                      if not isinstance(v, list)}))


if __name__ == '__main__':
    main()
