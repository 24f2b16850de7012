"""Bad adapter arguments fail when the model is built, naming the argument
(not later as a torch shape error)."""
import pytest

from mmpeft.adapters import build_adapter

BAD = [
    (dict(type='Mona', inner_dim=0), 'Mona: inner_dim must be an integer >= 1'),
    (dict(type='Mona', inner_dim=-4), 'Mona: inner_dim must be an integer >= 1'),
    (dict(type='Mona', inner_dim=8.0), 'Mona: inner_dim must be an integer'),
    (dict(type='Mona', dropout=1.0), r'Mona: dropout .* \[0, 1\), got 1.0'),
    (dict(type='Mona', dropout=-0.1), r'Mona: dropout .* \[0, 1\)'),
    (dict(type='RepAdapter', hidden_dim=0),
     'RepAdapter: hidden_dim must be an integer >= 1'),
    (dict(type='RepAdapter', groups=0),
     'RepAdapter: groups must be an integer >= 1'),
    (dict(type='RepAdapter', groups=-2),
     'RepAdapter: groups must be an integer >= 1'),
    (dict(type='RepAdapter', dropout=2), r'RepAdapter: dropout .* \[0, 1\)'),
    (dict(type='MiMiAdapter', hidden_dim=-1),
     'MiMiAdapter: hidden_dim must be an integer >= 0'),
]


@pytest.mark.parametrize('cfg, message', BAD,
                         ids=[f'{c["type"]}-{k}={v}' for c, _ in BAD
                              for k, v in c.items() if k != 'type'])
def test_bad_value_names_the_argument(cfg, message):
    with pytest.raises(ValueError, match=message) as error:
        build_adapter(cfg, 32)
    assert 'adapter_cfg' in str(error.value)  # where to fix it


def test_bad_width_from_the_backbone_is_named():
    with pytest.raises(ValueError, match='Mona: in_dim must be an integer'):
        build_adapter(dict(type='Mona'), 0)


@pytest.mark.parametrize('cfg', [
    dict(type='Mona', inner_dim=1, dropout=0.0),
    dict(type='RepAdapter', hidden_dim=2, groups=2, dropout=0.0),
    dict(type='MiMiAdapter', hidden_dim=0),  # every neuron pruned (deploy)
])
def test_edge_values_still_build(cfg):
    build_adapter(cfg, 32)
