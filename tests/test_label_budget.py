"""The label-budget study (tools/analysis_tools/label_budget_study.py,
evaluation/label_budget.py): the study's encoders fine-tuned with more
labels, each budget in its own folder."""
import glob
import json
import re
import os.path as osp
import statistics

import pytest
import torch

from mixedae_mm.evaluation import label_budget
from mixedae_mm.evaluation.pretraining import RunFolderMismatchError
from mixedae_mm.evaluation.study import ARMS, build_model, run_arm
from builders import finished_pretraining
from conftest import load_tool

TOOL = 'analysis_tools/label_budget_study.py'


def test_a_budget_without_a_schedule_names_the_flag():
    assert label_budget.schedule() == label_budget.BUDGETS
    assert label_budget.schedule([6000, 200]) == {200: 10, 6000: 2}
    assert label_budget.schedule([4, 2], [3, 1]) == {2: 1, 4: 3}
    with pytest.raises(ValueError, match='--finetune-epochs'):
        label_budget.schedule([5])
    with pytest.raises(ValueError, match='one per budget'):
        label_budget.schedule([5, 10], [1])


def test_a_finished_run_of_other_settings_is_refused(tmp_path):
    """Before: a run folder finished at another label budget was read as
    done, and its numbers stood in for the budget asked for."""
    run_dir = tmp_path / 'runs' / 'mae_seed0'
    run_dir.mkdir(parents=True)
    data = dict(finetune_index=torch.arange(20), train_labels=torch.zeros(50),
                test_labels=torch.zeros(30))
    finished = dict(arm='mae', seed=0, cfg_options=[], finetune_epochs=1,
                    finetune_images=20, train_images=50, test_images=30)
    (run_dir / 'result.json').write_text(json.dumps(finished))
    same = run_arm('mae', 0, str(tmp_path), data, data_root='unused',
                   cfg_options=[], finetune_epochs=1, log=print)
    assert same == finished
    data['finetune_index'] = torch.arange(40)
    with pytest.raises(RunFolderMismatchError,
                       match=r"finetune_images.: 20}, not {.finetune_images.:"
                       r" 40}: give runs with other settings their own "
                       r"--out folder"):
        run_arm('mae', 0, str(tmp_path), data, data_root='unused',
                cfg_options=[], finetune_epochs=1, log=print)


@pytest.mark.slow
def test_each_budget_evaluates_the_pretrained_encoders_and_is_reported(
        small_fashion_mnist, repo_root, tmp_path, capsys):
    """Two budgets, two seeds of MAE and MixedAE, from encoders an earlier
    study left finished: nothing is pretrained again, every run records its
    budget, the table has a row per budget with MixedAE minus MAE, and a
    second call only reports."""
    pretrain_dir = tmp_path / 'study_runs'
    for arm in label_budget.ARMS:
        for seed in (0, 1):
            torch.manual_seed(seed)
            model, _ = build_model(osp.join(repo_root, ARMS[arm]))
            finished_pretraining(
                str(pretrain_dir / f'{arm}_seed{seed}' / 'pretrain'),
                model.state_dict())
    out = tmp_path / 'budgets'
    tool = load_tool(TOOL)
    argv = ['--data-root', small_fashion_mnist, '--out', str(out),
            '--pretrain-dir', str(pretrain_dir), '--budgets', '2', '4',
            '--finetune-epochs', '1', '1', '--frozen-per-class', '5',
            '--seeds', '0', '1', '--limit-test', '40']
    tool.main(argv)

    results = [json.load(open(p)) for p in sorted(glob.glob(
        str(out / 'per_class_*' / 'runs' / '*' / 'result.json')))]
    assert len(results) == 8
    for result in results:
        assert result['finetune_images'] == 10 * result['finetune_per_class']
        assert result['train_images'] == 50 and result['test_images'] == 40
        assert 0 <= result['finetune_top1'] <= 100
        assert result['pretrain_seconds'] == 1.  # the finished pretraining's
        assert re.fullmatch(r'[0-9a-f]{40}(\+dirty)?', result['commit'])
    assert not glob.glob(str(pretrain_dir / '*' / 'pretrain' / '*.log'))
    table = (out / 'results.md').read_text()
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert [row.split(' | ')[0] for row in rows[1:]] == ['| 2', '| 4']
    for per_class in (2, 4):
        top1 = {arm: [r['finetune_top1'] for r in results
                      if r['arm'] == arm and r['finetune_per_class'] ==
                      per_class] for arm in label_budget.ARMS}
        difference = (statistics.fmean(top1['mixedae']) -
                      statistics.fmean(top1['mae']))
        assert (f'- {per_class} labelled images per class, fine-tune '
                f'top-1, mixedae − mae: {difference:+.2f} (2 vs 2 seeds; '
                '95% Welch interval') in table
    assert (out / 'results.png').stat().st_size > 5000

    capsys.readouterr()
    tool.main(argv)
    assert capsys.readouterr().out.count('done already') == 8
    longer = list(argv)
    epochs = argv.index('--finetune-epochs') + 1
    longer[epochs:epochs + 2] = ['2', '2']
    with pytest.raises(SystemExit) as stop:
        tool.main(longer)
    assert stop.value.code.startswith('label_budget_study.py: error: ')
    assert stop.value.code.endswith('their own --out folder')


def test_readme_and_results_quote_the_committed_label_budget_runs(repo_root):
    """docs/results/label_budget/results.md is the table the tool writes
    from the committed runs, docs/results.md shows it, and the README's
    sentence is computed from them."""
    from mixedae_mm.evaluation.seed_stats import welch_interval
    out = osp.join(repo_root, 'docs', 'results', 'label_budget')
    results = label_budget.read_results(out)
    table = open(osp.join(out, 'results.md')).read()
    assert table == label_budget.markdown_table(results)
    page = open(osp.join(repo_root, 'docs', 'results.md')).read()
    for line in table.strip().splitlines():
        assert line in page, line
    readme = ' '.join(open(osp.join(repo_root, 'README.md')).read().split())
    top1 = {(per_class, arm): [r['finetune_top1'] for r in results
                               if r['arm'] == arm
                               and r['finetune_per_class'] == per_class]
            for per_class in (1000, 6000) for arm in label_budget.ARMS}
    five_times, every_label = (
        welch_interval(top1[per_class, 'mixedae'], top1[per_class, 'mae'])
        for per_class in (1000, 6000))
    seeds = {per_class: len(top1[per_class, 'mae'])
             for per_class in (1000, 6000)}
    assert all(len(top1[per_class, 'mixedae']) == seeds[per_class]
               for per_class in seeds)
    assert ('Fine-tuned again with 1,000 and all 6,000 labels a class, '
            f'MixedAE minus MAE is {five_times["difference"]:+.2f} (95% '
            f'Welch interval {five_times["low"]:+.1f} to '
            f'{five_times["high"]:+.1f}, {seeds[1000]} seeds a side) and '
            f'{every_label["difference"]:+.2f} ({every_label["low"]:+.1f} '
            f'to {every_label["high"]:+.1f}, {seeds[6000]} seeds): the gain '
            'holds with five times the labels, and with all of them this '
            'size cannot tell the two apart') in readme
    assert five_times['low'] > 0  # "the gain holds"
    assert every_label['low'] < 0 < every_label['high']  # "cannot tell"
