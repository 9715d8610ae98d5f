"""``mixedae-knn``: ``tools/analysis_tools/knn_eval.py`` as an installed
command (same arguments).

The tool itself stays in ``tools/``; a wheel ships that folder as
``mixedae_mm/.mim/tools`` (next to the configs), an editable install or a
clone has it at the root. This module finds the file and runs its
``main``.
"""
import importlib.util
import os.path as osp
import sys

from ..apis import PACKAGE_DIR

#: the tool's default --data-config, by name
LINEAR_PROBE_RECIPE = 'mixedae_vitb_linear-90e_in1k'


def find_tool(relative_path: str) -> str:
    """``tools/<relative_path>``: shipped in the package (a wheel) or in
    the clone the package is imported from."""
    for root in (osp.join(PACKAGE_DIR, '.mim'), osp.dirname(PACKAGE_DIR)):
        path = osp.join(root, 'tools', relative_path)
        if osp.isfile(path):
            return path
    raise SystemExit(
        f'tools/{relative_path} is neither in {PACKAGE_DIR}/.mim nor next '
        'to the package: reinstall mixedae_mm from a clone (pip install -e . '
        'or a wheel built from it)')


def load_tool(relative_path: str):
    path = find_tool(relative_path)
    name = 'mixedae_tool_' + osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_data_config_resolved(argv: list) -> list:
    """The tool's ``--data-config`` is a path relative to a clone's root
    (default: the linear-probe recipe): give it the shipped config, and
    take a recipe's name for it too."""
    from . import resolve_config
    argv = list(argv)
    for index, arg in enumerate(argv):
        if arg == '--data-config' and index + 1 < len(argv):
            argv[index + 1] = resolve_config(argv[index + 1])
            return argv
        if arg.startswith('--data-config='):
            argv[index] = '--data-config=' + resolve_config(
                arg.split('=', 1)[1])
            return argv
    if '-h' in argv or '--help' in argv:
        return argv
    return argv + ['--data-config',
                   resolve_config(LINEAR_PROBE_RECIPE)]


def console_main():
    """``mixedae-knn``."""
    sys.argv[0] = 'mixedae-knn'  # argparse's program name
    tool = load_tool('analysis_tools/knn_eval.py')
    tool.main(with_data_config_resolved(sys.argv[1:]))
