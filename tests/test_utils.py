import pytest
from torch import nn

from mixedae_mm.utils import eval_mode


@pytest.mark.parametrize('training', [True, False])
def test_eval_mode_restores_the_mode_the_module_had(training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.train(training)
    with eval_mode(model) as inside:
        assert inside is model
        assert not model.training and not model[1].training
    assert model.training == training and model[1].training == training


def test_eval_mode_restores_the_mode_when_the_block_raises():
    model = nn.Dropout().train()
    with pytest.raises(RuntimeError, match='boom'):
        with eval_mode(model):
            raise RuntimeError('boom')
    assert model.training
