import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))


class BuildPyWithModelIndex(build_py):
    """Ships ``model-index.yml``, ``configs/``, ``tools/`` and the published
    ``weights/`` inside the package, in ``mixedae_mm/.mim`` (where
    ``mixedae_mm.apis.find_model_index`` and
    ``mixedae_mm.cli.knn_eval.find_tool`` look first), so
    ``mmpretrain.get_model(name)`` and ``mixedae-knn`` work from an installed
    wheel; an editable install reads them from the clone."""

    def run(self):
        super().run()
        target = osp.join(self.build_lib, 'mixedae_mm', '.mim')
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        shutil.copy(osp.join(HERE, 'model-index.yml'), target)
        for folder in ('configs', 'tools', 'weights'):
            shutil.copytree(
                osp.join(HERE, folder), osp.join(target, folder),
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


def get_version():
    scope = {}
    with open(osp.join(HERE, 'mixedae_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def parse_requirements(fname):
    """Read a requirements file, following ``-r`` includes."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip()))
            else:
                reqs.append(line)
    return reqs


setup(
    name='mixedae_mm',
    version=get_version(),
    description='MixedAE (CVPR 2023) self-supervised pretraining for OpenMMLab 2.x',
    long_description=open(osp.join(HERE, 'README.md')).read()
    if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    # the C source of the CPU attention kernels, compiled on first use
    package_data={'mixedae_mm.ops.fast': ['csrc/*.c']},
    python_requires='>=3.8',
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        'transfer': parse_requirements('requirements/optional.txt'),
        'tests': parse_requirements('requirements/tests.txt'),
    },
    license='Apache-2.0',
    cmdclass={'build_py': BuildPyWithModelIndex},
    # the tools of tools/ that a pip-installed package needs (mixedae_mm.cli)
    entry_points={
        'console_scripts': [
            'mixedae-train = mixedae_mm.cli.train:console_main',
            'mixedae-test = mixedae_mm.cli.test:console_main',
            'mixedae-knn = mixedae_mm.cli.knn_eval:console_main',
            'mixedae-vis-reconstruction = '
            'mixedae_mm.cli.vis_reconstruction:console_main',
            'mixedae-vis-attention = '
            'mixedae_mm.cli.vis_homologous_attention:console_main',
            'mixedae-demo-data = mixedae_mm.datasets.demo_data:main',
        ],
    },
    zip_safe=False,
)
