import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# tests import the package from this clone, installed or not
sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: runs for tens of seconds (still part of CI)')


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The embedded demo dataset, built once per test session."""
    from mixedae_mm.datasets import build_demo_dataset
    return build_demo_dataset(
        str(tmp_path_factory.mktemp('demo_photos')), crops_per_photo=4,
        crop_size=80)
