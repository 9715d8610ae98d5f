"""The GPU check: MixedAE against MAE, and the ViT-B recipe training and
resuming, written to one JSON and one log.

Run it through ``tools/gpu_check.sh``, which first installs the carried
OpenMMLab wheels (``gpu_wheels/``) and then runs this. The steps, their
settings (``GPU_CHECK_*`` environment variables) and the report are
``mixedae_mm/analysis/gpu_check.py``'s; see docs/benchmark.md, "The GPU
check".
"""
import importlib.util
import os
import os.path as osp
import shutil
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_check():
    """``mixedae_mm.analysis.gpu_check`` (of the package that ``import
    mixedae_mm`` would find, else this clone's), loaded without importing
    ``mixedae_mm``: the check needs only the standard library, and has to
    report where torch or the OpenMMLab packages do not import."""
    spec = importlib.util.find_spec('mixedae_mm')
    package = (spec.submodule_search_locations[0] if spec is not None
               else osp.join(ROOT, 'mixedae_mm'))
    spec = importlib.util.spec_from_file_location(
        'mixedae_mm_gpu_check', osp.join(package, 'analysis',
                                         'gpu_check.py'))
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def main(environ=os.environ) -> int:
    check = load_check()
    try:
        settings = check.read_settings(environ)
    except check.SettingError as error:
        print(f'gpu_check: error: {error}', file=sys.stderr)
        return 2
    if shutil.which('timeout') is None:
        print('gpu_check: error: the `timeout` command (GNU coreutils) is '
              'not on PATH; install coreutils', file=sys.stderr)
        return 2
    return check.run(settings, environ)


if __name__ == '__main__':
    sys.exit(main())
