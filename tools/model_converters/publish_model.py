"""Prepare a checkpoint for release, as OpenMMLab publishes its models.

    python tools/model_converters/publish_model.py \\
        work_dirs/mixedae/iter_300.pth release/mixedae_vit-b.pth
    # -> release/mixedae_vit-b-1a2b3c4d.pth (printed on stdout)

Keeps ``state_dict`` and a small plain ``meta`` (iteration, seed, config text,
versions); drops the optimizer, message hub, schedulers and anything else
that is not weights. The file loads with ``torch.load(weights_only=True)``
and its name ends in the first 8 hex digits of its sha256, so a download can
be checked with ``sha256sum``. Written atomically: the final name appears only
once the file is complete.
"""
import argparse
import hashlib
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'publish_model.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.checkpoints import (CheckpointError, add_overwrite_flag,
                                    atomic_write, check_destination, finite,
                                    keymap, read_state_dict)

#: mmengine ``meta`` entries worth shipping (others describe the training
#: process, not the weights)
META_KEYS = ('epoch', 'iter', 'seed', 'experiment_name', 'time', 'cfg',
             'mmengine_version', 'mmpretrain_version', 'dataset_meta')


def is_plain(value) -> bool:
    """JSON-like: what a reader may inspect without our code."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v)
                   for k, v in value.items())
    return False


def publishable(checkpoint: dict, state: dict, src: str,
                half: bool = False) -> dict:
    """``{'state_dict', 'meta'}`` with plain tensors and plain meta only;
    with ``half``, floating-point tensors in float16."""
    meta = checkpoint.get('meta')
    meta = meta if isinstance(meta, dict) else {}
    meta = {k: meta[k] for k in META_KEYS if k in meta and is_plain(meta[k])}
    meta.update(source=osp.basename(src),
                converter='tools/model_converters/publish_model.py')
    state = keymap.plain(state)
    if half:
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in state.items()}
        meta.update(stored_as='float16')
    return dict(state_dict=state, meta=meta)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def hashed_name(out: str, sha256: str) -> str:
    """``a/b.pth`` -> ``a/b-<8 hex>.pth``."""
    stem = out[:-len('.pth')] if out.endswith('.pth') else out
    return f'{stem}-{sha256[:8]}.pth'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='training checkpoint (mmengine .pth)')
    parser.add_argument(
        'dst', help='output name; the file is saved as DST-<sha256[:8]>.pth')
    parser.add_argument(
        '--half', action='store_true',
        help='store floating-point tensors as float16: half the file; '
        'loading casts them to the model\'s dtype')
    finite.add_flag(parser)
    add_overwrite_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        state, checkpoint = read_state_dict(args.src)
    except CheckpointError as err:
        sys.exit(f'publish_model.py: error: {err}')
    refusal = finite.refusal(state, args.src)
    if refusal and not args.allow_nonfinite:
        sys.exit(f'publish_model.py: error: {refusal}')
    published = publishable(checkpoint, state, args.src, args.half)

    def final_name(tmp):
        # the name is known once the file is written; a refusal removes it
        final = hashed_name(args.dst, sha256_of(tmp))
        check_destination(final, args.src, args.overwrite)
        return final

    try:
        final = atomic_write(args.dst, lambda f: torch.save(published, f),
                             final_path=final_name)
    except CheckpointError as err:
        sys.exit(f'publish_model.py: error: {err}')
    weights_key = next((k for k in ('state_dict', 'model')
                        if isinstance(checkpoint.get(k), dict)), None)
    left_out = [] if weights_key is None else sorted(
        k for k in checkpoint if k not in (weights_key, 'meta'))
    print(f'{len(state)} tensors; left out: {left_out or "nothing"}',
          file=sys.stderr)
    print(final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
