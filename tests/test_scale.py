"""Scaling up: the ViT-H/14 recipe, gradient accumulation, several nodes
and the memory estimate (docs/scale.md)."""
import os.path as osp
import time
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VITH = osp.join(ROOT, 'configs/mixedae_vith-p14_1600e.py')


@pytest.mark.slow
def test_vith_p14_recipe_builds_and_takes_a_finite_step():
    """The ViT-H/14 recipe at full size: 16 x 16 = 256 positions, groups of
    4, top-64 homologous keys, MAE's ViT-H decoder; a forward + backward of
    the training loss on 4 random images (fp32, CPU) gives finite losses and
    gradients."""
    import mixedae_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(VITH)
    start = time.perf_counter()
    model = MODELS.build(cfg.model)
    model.init_weights()
    backbone, neck = model.backbone, model.neck
    assert (backbone.embed_dims, backbone.num_layers) == (1280, 32)
    assert backbone.layers[0].attn.num_heads == 16
    assert backbone.patch_resolution == (16, 16)
    assert (backbone.num_patches, backbone.group_size, backbone.top_k) == (
        256, 4, 64)
    assert backbone.pos_embed.shape == (1, 257, 1280)
    assert neck.decoder_pos_embed.shape == (1, 257, 512)
    assert len(neck.decoder_blocks) == 8
    assert neck.decoder_pred.out_features == 14 * 14 * 3
    encoder_params = sum(p.numel() for p in backbone.parameters())
    assert 630e6 < encoder_params < 633e6  # ViT-H/14: 631M

    torch.manual_seed(0)
    losses = model.loss(torch.randn(4, 3, 224, 224), [])
    loss = losses['loss_rec'] + losses['loss_homo'] * 0.5
    loss.backward()
    for name in ('loss_rec', 'loss_homo', 'homo_acc'):
        assert torch.isfinite(losses[name]), name
    assert len([k for k in losses if k.startswith('homo_acc_l')]) == 32
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(
                param.grad).all(), name
    print(f'ViT-H/14 build + step: {time.perf_counter() - start:.1f} s')


DEMO = osp.join(ROOT, 'configs/demo/mixedae_vit-tiny-p8_demo.py')


def _demo_model():
    import mixedae_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(DEMO)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def _batch(images):
    from mmpretrain.structures import DataSample
    return dict(inputs=images,  # as default_collate stacks them
                data_samples=[DataSample() for _ in images])


def _gradients_of_one_update(model, cfg, batches, accumulate):
    """Run ``model.train_step`` (data preprocessor, loss, mmengine's
    ``OptimWrapper.update_params``) on each batch; return the gradients
    the optimizer steps with and the logged losses."""
    from mmengine.optim import build_optim_wrapper
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg.accumulative_counts = accumulate
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    stepped_with = []
    step = wrapper.step

    def recording_step(**kwargs):
        stepped_with.append({n: p.grad.clone()
                             for n, p in model.named_parameters()
                             if p.grad is not None})
        step(**kwargs)

    wrapper.step = recording_step
    logs = [model.train_step(_batch(b), wrapper) for b in batches]
    assert len(stepped_with) == 1  # one update, after the last micro-batch
    return stepped_with[0], logs


def test_gradient_accumulation_is_exact(monkeypatch):
    """Two micro-batches of 8 with accumulative_counts=2 step with the
    gradients of one batch of 16 mixed with the same partitions: losses
    are means over equally sized parts (every image reconstructs N - N/G
    positions, every mixed sample has N tokens) and no loss term spans
    two groups, so mean of the two means / 2 x 2 = the mean over 16."""
    from mixedae_mm import ops
    cfg, model = _demo_model()
    backbone = model.backbone
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    owner = ops.sample_partition(16 // backbone.group_size,
                                 backbone.num_patches, backbone.group_size)

    def serve(parts):
        parts = iter(parts)

        def sample_partition(num_mixed, num_patches, group_size, **kwargs):
            part = next(parts)
            assert part.shape == (num_mixed, num_patches)
            return part
        monkeypatch.setattr(ops, 'sample_partition', sample_partition)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    serve([owner])
    whole, (log,) = _gradients_of_one_update(model, cfg, [images], 1)
    model.load_state_dict(state)
    serve([owner[:2], owner[2:]])
    accumulated, logs = _gradients_of_one_update(
        model, cfg, [images[:8], images[8:]], 2)

    assert set(whole) == set(accumulated) and len(whole) > 10
    for name, grad in whole.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(accumulated[name], grad, rtol=0,
                                   atol=1e-6, msg=name)
    for key in ('loss_rec', 'loss_homo'):
        torch.testing.assert_close((logs[0][key] + logs[1][key]) / 2,
                                   log[key], rtol=1e-6, atol=0)


def test_micro_batch_not_a_multiple_of_the_group_names_the_setting():
    """Accumulation does not lift the rule: each micro-batch (the per-GPU
    train_dataloader.batch_size) must split into groups of 4."""
    cfg, model = _demo_model()
    from mmengine.optim import build_optim_wrapper
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg.accumulative_counts = 2
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    with pytest.raises(ValueError,
                       match=r'train_dataloader\.batch_size.*multiple of 4'):
        model.train_step(_batch(images), wrapper)


def _runner(tmp_path, runner_cls, batch_size, accumulate):
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.batch_size = batch_size
    cfg.optim_wrapper.accumulative_counts = accumulate
    cfg.optim_wrapper.optimizer.lr = 1e-3  # for 64 images, as below
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=64)
    cfg.experiment_name = f'{runner_cls.__name__}_{batch_size}_{accumulate}'
    runner = runner_cls.from_cfg(cfg)
    runner.optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
    return runner


def test_auto_scale_lr_counts_accumulated_micro_batches(tmp_path):
    """The lr is for the batch of an update, GPUs x per-GPU batch x
    accumulative_counts: 1 x 16 x 2 = 32 images get the lr of 32 (half the
    recipe's 1e-3 for 64), as 1 x 32 without accumulation does. mmengine's
    Runner counts 16 (a quarter); BatchLRReportHook says so."""
    from mmengine.runner import Runner

    from mixedae_mm.engine import BatchLRReportHook, MixedAERunner

    def lr(runner):
        return BatchLRReportHook.base_lr(runner)

    plain_32 = _runner(tmp_path / 'a', MixedAERunner, 32, 1)
    accumulated = _runner(tmp_path / 'b', MixedAERunner, 16, 2)
    mmengine_runner = _runner(tmp_path / 'c', Runner, 16, 2)
    assert lr(plain_32) == pytest.approx(1e-3 * 32 / 64)
    assert lr(accumulated) == pytest.approx(1e-3 * 32 / 64)
    assert lr(mmengine_runner) == pytest.approx(1e-3 * 16 / 64)

    for runner in (accumulated, mmengine_runner):
        lines = []
        runner.logger = SimpleNamespace(info=lines.append,
                                        warning=lines.append)
        BatchLRReportHook().before_train(runner)
        text = '\n'.join(lines)
        assert 'total batch 32 (1 GPU(s) x 16 x 2 accumulated)' in text
        mismatch = ('lr 0.00025 is the recipe\'s 0.001 scaled to 16 images, '
                    'not to the total batch 32: this runner (Runner)')
        assert (mismatch in text) == (runner is mmengine_runner)


def _run_with_fake(tmp_path, program, script, args, env):
    """Run ``script`` with ``program`` (torchrun, srun) replaced by a stub
    that writes the arguments it got, one per line."""
    import os
    import stat
    import subprocess
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'args.txt'
    stub = bin_dir / program
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n'
                    f'echo "PYTHONPATH=$PYTHONPATH" >> {record}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    full_env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
                    **env)
    subprocess.run(['bash', '-n', script], check=True, cwd=ROOT)
    subprocess.run(['bash', script] + args, check=True, cwd=ROOT,
                   env=full_env, timeout=60)
    return record.read_text().splitlines()


def test_dist_train_passes_the_node_settings_to_torchrun(tmp_path):
    """Node 2 of 4 x 8 GPUs: torchrun gets the node count, this node's rank,
    the master's address and port, 8 processes here, and train.py gets the
    config, --launcher pytorch and the user's arguments in order."""
    args = _run_with_fake(
        tmp_path, 'torchrun', 'tools/dist_train.sh',
        ['configs/mixedae_vitb_1600e.py', '8', '--cfg-options',
         'optim_wrapper.accumulative_counts=2'],
        dict(NNODES='4', NODE_RANK='2', MASTER_ADDR='10.1.2.3',
             PORT='29601'))
    assert args[:5] == ['--nnodes=4', '--node_rank=2',
                        '--master_addr=10.1.2.3', '--master_port=29601',
                        '--nproc_per_node=8']
    assert args[5] == osp.join(ROOT, 'tools/train.py')
    assert args[6:10] == ['configs/mixedae_vitb_1600e.py', '--launcher',
                          'pytorch', '--cfg-options']
    assert args[10] == 'optim_wrapper.accumulative_counts=2'
    assert args[-1].startswith(f'PYTHONPATH={ROOT}')


def test_dist_train_on_one_node_lets_torchrun_pick_a_free_port(tmp_path):
    """No NNODES/PORT: ``--standalone``, never a fixed port that a second
    job on the same machine (or a test running beside it) would race for."""
    import os
    args = _run_with_fake(
        tmp_path, 'torchrun', 'tools/dist_train.sh',
        ['configs/mixedae_vitb_1600e.py', '2'],
        {k: '' for k in ('NNODES', 'PORT') if k in os.environ})
    assert args[:2] == ['--standalone', '--nproc_per_node=2']
    assert not any(a.startswith('--master_port') for a in args)


def test_slurm_train_asks_for_several_nodes(tmp_path):
    """GPUS=32 GPUS_PER_NODE=8: 32 tasks, 8 per node (Slurm gives 4 nodes),
    8 GPUs each, every task runs train.py with the slurm launcher."""
    args = _run_with_fake(
        tmp_path, 'srun', 'tools/slurm_train.sh',
        ['gpu', 'mixedae_vith', 'configs/mixedae_vith-p14_1600e.py',
         'work_dirs/vith', '--resume'],
        dict(GPUS='32', GPUS_PER_NODE='8', CPUS_PER_TASK='10'))
    for expected in ('-p', 'gpu', '--job-name=mixedae_vith', '--gres=gpu:8',
                     '--ntasks=32', '--ntasks-per-node=8',
                     '--cpus-per-task=10', '--kill-on-bad-exit=1'):
        assert expected in args, expected
    train = args.index(osp.join(ROOT, 'tools/train.py'))
    assert args[train - 2:train] == ['python', '-u']
    assert args[train + 1:train + 5] == [
        'configs/mixedae_vith-p14_1600e.py', '--work-dir=work_dirs/vith',
        '--launcher=slurm', '--resume']


def _estimate_memory_tool():
    from conftest import load_tool
    return load_tool('analysis_tools/estimate_memory.py')


def test_estimate_memory_counts_states_and_scales_activations():
    """On the demo config: model states are 16 bytes per trainable
    parameter (the frozen position embedding: 4), divided by the FSDP world
    size; activations extrapolated from batches 4 and 8 to 16 match the
    bytes measured at 16."""
    from mixedae_mm.analysis.memory import (activation_bytes, extrapolate,
                                            model_state_bytes)
    tool = _estimate_memory_tool()
    cfg, model = _demo_model()
    numel = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < numel  # the sin-cos position embedding is frozen
    states = model_state_bytes(model)
    assert states == dict(weights=4 * numel, gradients=4 * trainable,
                          optimizer=8 * trainable)
    sharded = model_state_bytes(model, world_size=8)
    assert sharded == {k: v / 8 for k, v in states.items()}
    with pytest.raises(ValueError, match='--fsdp-world-size must be >= 1'):
        model_state_bytes(model, world_size=0)

    measured = activation_bytes(model, model.backbone.img_size, (4, 8, 16))
    assert measured[0] < measured[1] < measured[2]
    predicted = extrapolate((4, 8), measured[:2], 16)
    assert predicted == pytest.approx(measured[2], rel=0.02)

    result = tool.main([DEMO, '--batch-size', '16', '--fsdp-world-size',
                        '2'])
    assert result['parameters'] == numel
    assert result['weights_bytes'] == 4 * numel / 2
    assert result['activation_bytes'] == pytest.approx(predicted, rel=1e-6)
    assert result['total_bytes'] == pytest.approx(
        sum(states.values()) / 2 + predicted, rel=1e-6)


@pytest.mark.parametrize('gpus,per_gpu,accumulate,lr', [
    (32, 128, 1, 2.4e-3),   # README "Scale": 4 x 8 GPUs x 128 = 4096
    (32, 512, 1, 9.6e-3),   # 4 x 8 GPUs x 512 = 16384
    (8, 256, 2, 2.4e-3),    # 8 GPUs x 256 x 2 accumulated = 4096
])
def test_readme_lr_examples_on_the_vith_recipe(gpus, per_gpu, accumulate,
                                               lr):
    """The lr the README's Scale section states for the shipped ViT-H/14
    recipe, as MixedAERunner.scale_lr sets it (only the runner state that
    scale_lr reads is set: building ViT-H is not needed)."""
    from types import SimpleNamespace

    import torch
    from mmengine.optim import OptimWrapper

    from mixedae_mm.engine import MixedAERunner
    cfg = Config.fromfile(VITH)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))],
                                  lr=cfg.optim_wrapper.optimizer.lr)
    wrapper = OptimWrapper(optimizer, accumulative_counts=accumulate)
    runner = MixedAERunner.__new__(MixedAERunner)
    runner._world_size = gpus
    runner._train_dataloader = dict(batch_size=per_gpu)
    runner.param_schedulers = None
    runner.logger = SimpleNamespace(info=lambda msg: None)
    MixedAERunner.scale_lr(runner, wrapper, cfg.auto_scale_lr)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(lr)
