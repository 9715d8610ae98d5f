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


def console_main():
    """``mixedae-knn``."""
    sys.argv[0] = 'mixedae-knn'  # argparse's program name
    load_tool('analysis_tools/knn_eval.py').main()
