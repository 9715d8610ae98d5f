"""Registration in mmpretrain's registries, directly and via custom_imports."""
import os
import subprocess
import sys
import textwrap

import pytest


def test_modules_are_found_from_mmpretrain_scope():
    import mixedae_mm  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import HOOKS, MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for name in ('MixedAE', 'MixedAEViT', 'MixedAEPretrainDecoder',
                     'MixedAEPretrainHead'):
            assert MODELS.get(name) is not None, name
        assert HOOKS.get('TrainingSummaryHook') is not None
    # and with the scope prefix, from anywhere
    assert MODELS.get('mmpretrain.MixedAEViT') is MODELS.get('MixedAEViT')


@pytest.mark.slow
def test_custom_imports_from_a_config_in_another_folder(tmp_path, repo_root):
    """A user project elsewhere imports us only through its config."""
    config = tmp_path / 'user_project' / 'my_mixedae.py'
    config.parent.mkdir()
    config.write_text(
        textwrap.dedent("""
        default_scope = 'mmpretrain'
        custom_imports = dict(imports=['mixedae_mm'],
                              allow_failed_imports=False)
        model = dict(
            type='MixedAE',
            backbone=dict(type='MixedAEViT', img_size=32, patch_size=8,
                          arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                    feedforward_channels=64)),
            neck=dict(type='MixedAEPretrainDecoder', decoder_embed_dim=16,
                      decoder_depth=1, decoder_num_heads=2),
            head=dict(type='MixedAEPretrainHead'))
        """))
    script = textwrap.dedent(f"""
        import sys
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(config)!r})
        assert 'mixedae_mm' in sys.modules, 'custom_imports did not import'
        init_default_scope(cfg.default_scope)
        from mmpretrain.registry import MODELS
        model = MODELS.build(cfg.model)
        print(type(model).__name__, type(model.backbone).__name__)
        """)
    result = subprocess.run(
        [sys.executable, '-c', script],
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=repo_root),
        capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['MixedAE', 'MixedAEViT']


@pytest.mark.slow
def test_importing_the_package_adds_no_mmseg_or_mmdet_imports(repo_root):
    """Transfer registrations load only from transfer configs. (mmpretrain
    itself imports parts of mmdet when it is installed: only what we add
    counts.)"""
    code = ('import sys, {}; '
            'print(sorted(m for m in sys.modules '
            'if m.split(".")[0] in ("mmseg", "mmdet")))')

    def downstream_modules(package):
        out = subprocess.run([sys.executable, '-c', code.format(package)],
                             cwd=repo_root, capture_output=True, text=True,
                             check=True)
        return set(eval(out.stdout))

    ours = downstream_modules('mixedae_mm')
    assert not any(m.startswith('mmseg') for m in ours)
    assert ours <= downstream_modules('mmpretrain.models')


def test_ops_import_needs_only_torch(repo_root):
    """Without OpenMMLab, ``import mixedae_mm`` registers nothing and the
    method's functions still import."""
    code = ('import sys; sys.modules["mmpretrain"] = None; '
            'sys.modules["mmengine"] = None; '
            'from mixedae_mm import ops; '
            'print(ops.sample_partition(1, 4, 2).shape)')
    out = subprocess.run([sys.executable, '-c', code], cwd=repo_root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
