"""Issue 13: see what MixedAE learned (reconstructions, tools, hook)."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mixedae_mm import visualization as vis
from mixedae_mm.visualization import pixels as pixel_space

DEMO_CONFIG = 'configs/demo/mixedae_vit-tiny-p8_demo.py'


def _demo_model(repo_root, ablation='none'):
    from mmpretrain.registry import MODELS

    import mixedae_mm  # noqa: F401
    cfg = Config.fromfile(osp.join(repo_root, DEMO_CONFIG))
    cfg.model.ablation = ablation
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_pixel_round_trip_is_exact(repo_root):
    """patchify/unpatchify, norm_pix and the preprocessor's normalisation
    undo each other."""
    model = _demo_model(repo_root)
    head, pre = model.head, model.data_preprocessor
    pixels = torch.randint(0, 256, (4, 3, 64, 64)).float()
    inputs = (pixels - pre.mean) / pre.std
    patches = head.patchify(inputs)
    assert torch.equal(head.unpatchify(patches), inputs)
    target = head.construct_target(inputs)  # what the loss compares with
    mean, var = pixel_space.patch_statistics(patches)
    restored = pixel_space.denormalize_patches(target, mean, var)
    torch.testing.assert_close(restored, patches, atol=1e-5, rtol=1e-5)
    back = pixel_space.to_pixels(head.unpatchify(restored), pre.mean, pre.std)
    torch.testing.assert_close(back, pixels, atol=1e-3, rtol=0)


def test_patch_statistics_from_visible_patches_only():
    patches = torch.randn(2, 4, 12)
    visible = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]]).bool()
    mean, var = pixel_space.patch_statistics(patches, visible)
    assert mean.shape == var.shape == (2, 4, 1)
    torch.testing.assert_close(mean[0, 3, 0], patches[0, :2].mean(-1).mean())
    torch.testing.assert_close(var[1, 0, 0], patches[1, 3].var())
    # the hidden patches' values do not matter
    changed = patches.clone()
    changed[~visible] += 100
    assert torch.equal(pixel_space.patch_statistics(changed, visible)[0], mean)
    with pytest.raises(ValueError, match='no visible patch'):
        pixel_space.patch_statistics(patches,
                                     torch.zeros(2, 4, dtype=torch.bool))


@pytest.mark.parametrize('ablation', ['none', 'mae'])
def test_reconstruct_shapes_paste_and_rng(repo_root, ablation):
    model = _demo_model(repo_root, ablation).train()
    pre = model.data_preprocessor
    pixels = torch.randint(0, 256, (8, 3, 64, 64)).float()
    inputs = (pixels - pre.mean) / pre.std
    state = torch.get_rng_state()
    rec = vis.reconstruct(model, inputs, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert model.training  # mode restored
    for image in (rec.original, rec.model_input, rec.reconstruction,
                  rec.pasted):
        assert image.shape == (8, 3, 64, 64)
        assert 0 <= image.min() and image.max() <= 255
    assert rec.visible.shape == (8, 64) and rec.visible.dtype == torch.bool
    # each image sees 16 of 64 patches (its share of 4, or MAE's 25 %)
    assert rec.visible.sum(1).tolist() == [16] * 8
    torch.testing.assert_close(rec.original, pixels, atol=1e-3, rtol=0)
    own = pixel_space.patch_mask_to_pixels(rec.visible, (8, 8),
                                           8).expand_as(pixels)
    torch.testing.assert_close(rec.pasted[own], pixels[own], atol=1e-3,
                               rtol=0)
    assert torch.equal(rec.pasted[~own], rec.reconstruction[~own])
    if ablation == 'none':
        assert rec.owner.shape == (2, 64)
        # the model input of image b is its group's mix: b's own pixels
        torch.testing.assert_close(rec.model_input[own], pixels[own],
                                   atol=1e-3, rtol=0)
        slot = rec.owner.repeat_interleave(4, 0) == (
            torch.arange(8) % 4)[:, None]
        assert torch.equal(slot, rec.visible)
    else:
        assert rec.owner is None
        assert (rec.model_input[~own] == 0).all()
    flat = vis.reconstruct(model, inputs, seed=1, pixel_stats='visible')
    assert torch.equal(flat.visible, rec.visible)
    torch.testing.assert_close(flat.pasted[own], pixels[own], atol=1e-3,
                               rtol=0)
    with pytest.raises(ValueError, match='pixel_stats must be one of'):
        vis.reconstruct(model, inputs, pixel_stats='mean')
    again = vis.reconstruct(model, inputs, seed=1)
    assert torch.equal(again.reconstruction, rec.reconstruction)
    assert not torch.equal(
        vis.reconstruct(model, inputs, seed=2).visible, rec.visible)


def _run_tool(capsys, tool, *args):
    """``tools/<tool>``'s ``main`` in this process (the tool's work, not a
    new interpreter, is what these tests check); returns what it printed."""
    from conftest import load_tool
    capsys.readouterr()
    load_tool(tool).main([str(a) for a in args])
    return capsys.readouterr().out


def _png(path):
    return np.asarray(Image.open(path).convert('RGB'))


def assert_labelled(image, columns, cell):
    """``image`` (a saved picture) has a margin left of its ``columns``
    cells, with text in it (dark pixels on white)."""
    from mixedae_mm.visualization import GAP
    margin = image.shape[1] - columns * (cell + GAP)
    assert margin > 20, image.shape
    assert (image[:, :margin] < 100).all(axis=-1).any()


def assert_text_drawn(picture, text, xy):
    """``text`` is in ``picture.image`` at ``xy``: the pixels there are
    exactly the label drawn alone, and not blank."""
    from PIL import ImageDraw

    from mixedae_mm import visualization as vis
    font = vis.label_font()
    width, height = vis.text_size(text, font)
    alone = Image.new('RGB', (width, height), 'white')
    ImageDraw.Draw(alone).multiline_text((0, 0), text, fill=(0, 0, 0),
                                         font=font)
    x, y = xy
    crop = picture.image[y:y + height, x:x + width]
    assert np.array_equal(crop, np.asarray(alone)), text
    assert (crop < 100).all(axis=-1).any(), text


@pytest.mark.slow
def test_vis_reconstruction_tool(repo_root, pretrained_checkpoint, demo_data,
                                 tmp_path, capsys):
    images = sorted(glob.glob(osp.join(demo_data, 'train', '**', '*.*'),
                              recursive=True))[:5]
    out = tmp_path / 'vis'
    printed = _run_tool(capsys, 'visualization/vis_reconstruction.py',
                        osp.join(repo_root, DEMO_CONFIG),
                        pretrained_checkpoint, *images, '--out', out,
                        '--seed', '3')
    assert 'repeating 3' in printed  # 5 images -> 2 groups of 4
    pngs = sorted(glob.glob(str(out / '*.png')))
    assert [osp.basename(p) for p in pngs] == ['group_0.png', 'group_1.png']
    from mixedae_mm.visualization import GAP, ROW_NAMES
    cell = 128  # 64 px cells upscaled to at least 128
    for path in pngs:
        grid = _png(path)
        assert grid.shape[0] > len(ROW_NAMES) * (cell + GAP)
        assert_labelled(grid, columns=4, cell=cell)
        assert grid.std() > 10



class _LossRecorder:
    """Collects every iteration's outputs (registered on a runner)."""

    def __init__(self):
        from mmengine.hooks import Hook

        recorder = self

        class Recorder(Hook):
            def after_train_iter(self, runner, batch_idx, data_batch=None,
                                 outputs=None):
                recorder.losses.append(
                    {k: v.item() for k, v in outputs.items()})

        self.losses = []
        self.hook = Recorder()


def _without_step_seeding(cfg):
    # StepSeedHook reseeds before every step, which would hide random
    # numbers the visualisation hook consumed
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] != 'StepSeedHook']


def _hook_cfg(interval):
    def edit(cfg):
        _without_step_seeding(cfg)
        for hook in cfg.custom_hooks:
            if hook['type'] == 'ReconstructionVisualizationHook':
                hook['interval'] = interval
    return edit


def _without_hook(cfg):
    _without_step_seeding(cfg)
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] != 'ReconstructionVisualizationHook']


@pytest.mark.slow
def test_hook_writes_pictures_and_leaves_training_unchanged(demo_data,
                                                            tmp_path):
    """The shipped demo config's hook (at interval 2 here) writes grids
    through the visualizer's local backend, and the losses of a run with it
    equal those of a run without it, iteration by iteration. Its images
    are spread over the training set (not its first, folder-sorted ones)."""
    from conftest import short_demo_run

    from mixedae_mm.engine import ReconstructionVisualizationHook
    losses = []
    for name, edit in (('with', _hook_cfg(2)), ('without', _without_hook)):
        runner = short_demo_run(tmp_path / name, demo_data, iters=4,
                                batch_size=4, name=name, edit=edit)
        recorder = _LossRecorder()
        runner.register_hook(recorder.hook)
        runner.train()
        losses.append(recorder.losses)
        if name == 'with':
            hook, = [h for h in runner.hooks
                     if isinstance(h, ReconstructionVisualizationHook)]
            dataset = runner.train_dataloader.dataset
            size = len(dataset)
            assert hook.image_paths == [
                dataset.get_data_info(i * size // 4)['img_path']
                for i in range(4)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    pngs = sorted(glob.glob(str(
        tmp_path / 'with' / '*' / 'vis_data' / 'vis_image' / '*.png')))
    assert [osp.basename(p) for p in pngs] == [
        'reconstruction_group0_2.png', 'reconstruction_group0_4.png']
    first, last = (_png(p) for p in pngs)
    assert first.shape == last.shape
    assert_labelled(first, columns=4, cell=128)
    assert first.std() > 10
    assert not np.array_equal(first, last)  # the model trained in between
    assert not glob.glob(str(tmp_path / 'without' / '*' / 'vis_data' /
                             'vis_image' / '*.png'))


@pytest.mark.slow
def test_plot_log_tool(repo_root, demo_work_dir, tmp_path, capsys):
    work_dir = demo_work_dir
    out = tmp_path / 'curves.png'
    printed = _run_tool(capsys, 'analysis_tools/plot_log.py', work_dir,
                        '--out', out)
    drawn = printed.split(': ')[1].split(' from ')[0].split(', ')
    assert {'loss', 'loss_rec', 'loss_homo', 'lr', 'homo_acc',
            'homo_acc_l0'} <= set(drawn)
    image = _png(out)
    assert image.shape == (3 * 260, 700, 3)  # 3 panels at 7 x 2.6 in, 100 dpi
    assert image.std() > 10
    from conftest import load_tool
    plot_log = load_tool('analysis_tools/plot_log.py')
    with pytest.raises(SystemExit, match="has no \\['nonsense'\\]"):
        plot_log.main([str(work_dir), '--keys', 'nonsense', '--out',
                       str(out)])
    with pytest.raises(SystemExit, match='no vis_data/scalars.json'):
        plot_log.main([str(tmp_path / 'nowhere'), '--out', str(out)])


def test_topk_key_frequency():
    indices = torch.tensor([[[[0, 1], [2, 3]], [[0, 2], [2, 1]]]])  # 1,2,2,2
    freq = pixel_space.topk_key_frequency(indices, 4)
    assert freq.shape == (1, 2, 4)
    assert freq[0, 0].tolist() == [1., .5, .5, 0.]
    assert freq[0, 1].tolist() == [0., .5, 1., .5]


@pytest.mark.slow
def test_vis_homologous_attention_tool(repo_root, pretrained_checkpoint,
                                       demo_data, tmp_path, capsys):
    images = sorted(glob.glob(osp.join(demo_data, 'train', '**', '*.*'),
                              recursive=True))[:8]
    out = tmp_path / 'attn'
    printed = _run_tool(capsys, 'visualization/vis_homologous_attention.py',
                        osp.join(repo_root, DEMO_CONFIG),
                        pretrained_checkpoint, *images, '--out', out)
    pngs = sorted(glob.glob(str(out / '*.png')))
    assert len(pngs) == 2 == printed.count('homologous share')
    from mixedae_mm.visualization import GAP
    grid = _png(pngs[0])
    # 6 homologous layers x 4 queries of 128 px cells, labelled
    assert grid.shape[0] > 6 * (128 + GAP)
    assert_labelled(grid, columns=4, cell=128)
    assert grid.std() > 10


def test_a_config_without_test_pipeline_is_a_clear_error():
    from mixedae_mm.visualization import test_pipeline_of
    with pytest.raises(ValueError, match='the config has no test_pipeline'):
        test_pipeline_of(Config(dict(model=dict())))
    pipeline = [dict(type='LoadImageFromFile')]
    assert test_pipeline_of(Config(dict(test_dataloader=dict(
        dataset=dict(pipeline=pipeline))))) == pipeline


@pytest.mark.slow
def test_demo_figures_from_a_work_dir(repo_root, demo_work_dir, tmp_path,
                                      capsys):
    """The one command behind run_demo.sh's pictures and docs/images: the
    last checkpoint, the dumped config, one group of different photos, three
    PNGs, their paths printed next to the checkpoint's."""
    out = tmp_path / 'figures'
    printed = _run_tool(capsys, 'visualization/demo_figures.py',
                        demo_work_dir, '--out', out)
    lines = dict(line.split(': ', 1) for line in printed.splitlines()
                 if ': ' in line)
    assert lines['checkpoint'].endswith('iter_2.pth')
    expected = {
        'reconstructions': 'demo_reconstruction.png',
        'homologous attention': 'demo_homologous_attention.png',
        'curves': 'demo_curves.png',
    }
    for what, name in expected.items():
        assert lines[what] == str(out / name)
        image = _png(out / name)
        if what == 'curves':
            assert image.shape == (3 * 260, 700, 3)
        else:  # 4 columns of 128 px cells, labelled
            assert_labelled(image, columns=4, cell=128)
        assert image.std() > 10, what
    # the group is made of crops of four different photos
    shown = lines[str(out / 'demo_reconstruction.png')].split(', ')
    assert len({name.rsplit('_', 1)[0] for name in shown}) == 4
    # the same pictures again: fixed images and seeds
    _run_tool(capsys, 'visualization/demo_figures.py', demo_work_dir,
              '--out', tmp_path / 'again')
    for name in ('demo_reconstruction.png', 'demo_homologous_attention.png'):
        assert np.array_equal(_png(out / name),
                              _png(tmp_path / 'again' / name))


def test_run_demo_ends_with_the_pictures(repo_root):
    with open(osp.join(repo_root, 'tools/run_demo.sh')) as f:
        steps = [line.strip() for line in f
                 if line.strip() and not line.startswith('#')]
    assert 'tools/visualization/demo_figures.py work_dirs/demo' in steps[-1]
    assert '--out work_dirs/demo/' in steps[-1]


def test_demo_figures_names_what_is_missing(repo_root, tmp_path):
    from conftest import load_tool
    demo_figures = load_tool('visualization/demo_figures.py')
    with pytest.raises(SystemExit, match='last_checkpoint: give the work '
                       'dir of a run that saved a checkpoint'):
        demo_figures.main([str(tmp_path), '--out', str(tmp_path / 'o')])
    (tmp_path / 'last_checkpoint').write_text('elsewhere/iter_9.pth')
    with pytest.raises(SystemExit, match='which does not exist'):
        demo_figures.main([str(tmp_path), '--out', str(tmp_path / 'o')])
    (tmp_path / 'iter_9.pth').write_bytes(b'')
    with pytest.raises(SystemExit, match='give --config CONFIG'):
        demo_figures.main([str(tmp_path), '--out', str(tmp_path / 'o')])


def test_attention_picture_shows_the_backbones_topk_keys(repo_root):
    """Every cell of the attention picture lights exactly the keys the
    backbone's ``return_topk`` selected for that query (brightness = share
    of heads), read back from the pixels and compared with an independent
    seeded call of the backbone."""
    from mixedae_mm import visualization as vis
    from mixedae_mm.visualization import seeded_rng
    model = _demo_model(repo_root)
    backbone, pre = model.backbone, model.data_preprocessor
    generator = torch.Generator().manual_seed(0)
    # bright textures, so that a dimmed pixel reads back its factor well
    pixels = torch.randint(100, 256, (8, 3, 64, 64), generator=generator)
    inputs = (pixels.float() - pre.mean) / pre.std
    pictures, precision = vis.homologous_attention_grids(model, inputs,
                                                         seed=5)

    model.eval()
    with torch.no_grad(), seeded_rng(5, 'cpu'):
        encoding = backbone(inputs, mask=True, return_topk=True)
    owner = encoding.owner  # (M, N)
    num_mixed, num_patches = owner.shape
    heads = backbone.arch_settings['num_heads']
    patch, side = backbone.patch_size, 8
    assert len(pictures) == num_mixed
    rows, cols = torch.arange(num_patches) // side, torch.arange(
        num_patches) % side
    dist = (rows - 3.5)**2 + (cols - 3.5)**2
    # the mixed image in pixels: patch j of mixed m is image m*G+owner's
    patches = pixels.float().unfold(2, patch, patch).unfold(3, patch, patch)
    for m in range(num_mixed):
        for g in range(4):
            query = int(torch.where(owner[m] == g, dist.float(),
                                    torch.tensor(float('inf'))).argmin())
            for layer, topk in enumerate(encoding.topk_indices):
                picked = topk[m, :, query]  # (heads, K)
                share = torch.tensor([(picked == j).any(-1).float().mean()
                                      for j in range(num_patches)])
                y0, x0 = pictures[m].cells[layer][g]
                cell = torch.from_numpy(pictures[m].image[
                    y0:y0 + 64, x0:x0 + 64].copy()).float()
                for j in range(num_patches):
                    r, c = divmod(j, side)
                    source = patches[m * 4 + owner[m, j], :, r, c]  # C p p
                    shown = cell[r * patch:(r + 1) * patch,
                                 c * patch:(c + 1) * patch].permute(2, 0, 1)
                    # interior pixels (the query's outline is coloured)
                    factor = (shown[:, 1:-1, 1:-1] /
                              source[:, 1:-1, 1:-1]).mean()
                    read = ((factor - 0.2) / 0.8 * heads).round() / heads
                    assert read == share[j], (m, g, layer, j)
                homologous = (owner[m, picked] == g).float().mean()
                torch.testing.assert_close(precision[m, layer, g],
                                           homologous)


def _demo_inputs(model, count=8, seed=0):
    pre = model.data_preprocessor
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, 3, 64, 64), generator=generator)
    return (pixels.float() - pre.mean) / pre.std


def test_reconstruction_picture_names_its_rows_and_images(repo_root):
    """Issue 21: the picture says what each row is and which image each
    column shows, in its pixels; the cells are the images, untouched."""
    from mixedae_mm import visualization as vis
    model = _demo_model(repo_root)
    rec = vis.reconstruct(model, _demo_inputs(model), seed=1)
    names = [f'photo_{i}.jpg' for i in range(8)]
    pictures = vis.reconstruction_grids(rec, 4, 8, scale=2,
                                        image_names=names)
    assert len(pictures) == 2
    row_labels = [vis.ROW_LABELS[name] for name in vis.ROW_NAMES]
    assert 'model input' in row_labels[1] and 'visible' in row_labels[2]
    for index, picture in enumerate(pictures):
        texts = [text for text, _ in picture.labels]
        assert texts == names[4 * index:4 * index + 4] + row_labels
        for text, xy in picture.labels:
            assert_text_drawn(picture, text, xy)
        # row names sit in a margin left of the first column
        first_x = picture.cells[0][0][1]
        for text, (x, _) in picture.labels[4:]:
            assert x + vis.text_size(text, vis.label_font())[0] < first_x
        for column in range(4):
            image = 4 * index + column
            y, x = picture.cells[0][column]  # row 'original'
            expected = rec.original[image].permute(1, 2, 0).round().clamp(
                0, 255).byte().numpy().repeat(2, 0).repeat(2, 1)
            assert np.array_equal(picture.image[y:y + 128, x:x + 128],
                                  expected)
    unnamed = vis.reconstruction_grids(rec, 4, 8)[1]
    assert [t for t, _ in unnamed.labels][:4] == [
        'image 1', 'image 2', 'image 3', 'image 4']
    with pytest.raises(ValueError, match='3 image names for 8 images'):
        vis.reconstruction_grids(rec, 4, 8, image_names=names[:3])


def test_attention_picture_labels_layers_shares_and_queries(repo_root):
    """Issue 21: each row names its layer and mean homologous share, each
    cell its query's share, each column the query's image, the title the
    chance level; the numbers are the returned ``precision``."""
    from mixedae_mm import visualization as vis
    model = _demo_model(repo_root)
    long_name = 'a_long_folder_name_of_photographs_' * 2 + '7.jpg'
    names = [f'img{i}.png' for i in range(7)] + [long_name]
    pictures, precision = vis.homologous_attention_grids(
        model, _demo_inputs(model, seed=2), seed=5, image_names=names)
    layers = model.backbone.homo_attn_layers
    font = vis.label_font()
    for m, picture in enumerate(pictures):
        texts = [text for text, _ in picture.labels]
        assert 'chance 0.25' in texts[0]
        columns = texts[1:5]
        assert columns[:3] == [f'query in\nimg{4 * m + g}.png'
                               for g in range(3)]
        if m == 0:
            assert columns[3] == 'query in\nimg3.png'
        else:  # shortened at the left to the 64 px cell
            assert columns[3].startswith('query in\n...')
            assert long_name.endswith(columns[3].split('...')[1])
            assert vis.text_size(columns[3], font)[0] <= 64
        rows = texts[5:5 + len(layers)]
        assert rows == [
            f'layer {layer}\nmean homologous\n'
            f'{precision[m, i].mean().item():.2f}'
            for i, layer in enumerate(layers)]
        captions = texts[5 + len(layers):]
        # 64 px cells: the share alone (the title names it)
        assert captions == [f'{precision[m, i, g].item():.2f}'
                            for i in range(len(layers)) for g in range(4)]
        for text, xy in picture.labels:
            assert_text_drawn(picture, text, xy)
    # cells of 128 px, as the tools draw them, have room for the word
    picture = vis.homologous_attention_grids(
        model, _demo_inputs(model, seed=2), seed=5, scale=2)[0][0]
    assert [text for text, _ in picture.labels][-1] == (
        f'{precision[0, -1, -1].item():.2f} homologous')
