"""MiMi's official pruning, transcribed, against mmpeft's ``'rounds'`` rule.

The official functions below are transcribed from IemProg/MiMi
``few_shot_prune.py`` (``identity_pruning``, ``apply_mask_pruning``,
``_count_unmasked_weights``, ``_count_neurons``, ``get_weights``,
``structured_magnitude_pruning_layer`` and the ``amount`` update of the
phase loop in ``main``), kept as written there except ``.cuda()`` (CPU) --
they use ``torch.nn.utils.prune`` masks on ``fc1`` / ``fc2`` Linear layers
named ``parallel_mlp``, nothing of mmpeft. On the same weights, round after
round, the masks must be those of mmpeft's MiMiAdapters pruned by
``official_plan`` + ``official_prune_masks`` (what MiMiPruneHook(schedule=
'rounds') calls), with and without ``--weighted``, with ties at the threshold
and adapters that lose every neuron.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from mmpeft.adapters import MiMiAdapter
from mmpeft.engine.mimi_prune_hook import official_plan, official_prune_masks


# ----------------------------------------------- official code, transcribed
def identity_pruning(model, layer_name="parallel_mlp"):
    for (n, m) in model.named_modules():
        if isinstance(m, nn.Linear) and (layer_name in n):
            prune.identity(m, name="weight")


def apply_mask_pruning(model, layer_name="parallel_mlp"):
    for (n, m) in model.named_modules():
        if isinstance(m, nn.Linear) and (layer_name in n):
            m.weight = m.weight * m.weight_mask


def _count_unmasked_weights(mlist, layer_name="parallel_mlp",
                            type="structured"):
    unmaskeds, total = [], []
    for i in range(0, len(mlist), 2):
        (fc1_n, fc1_m), (fc2_n, fc2_m) = mlist[i], mlist[i + 1]
        concat_mask = torch.cat((fc1_m.weight_mask, fc2_m.weight_mask.T), 1)
        rows = torch.sum(torch.abs(concat_mask), 1) != 0
        added = torch.sum(rows)
        unmaskeds.append(added)
        total.append(fc1_m.weight_mask.shape[0])
    unmaskeds = torch.FloatTensor(unmaskeds)
    total = torch.FloatTensor(total)
    return unmaskeds, total


def _count_neurons(mlist):
    total = []
    for i in range(0, len(mlist), 2):
        (fc1_n, fc1_m), _ = mlist[i], mlist[i + 1]
        added = fc1_m.weight.shape[0]
        total.append(added)
    unmaskeds = torch.FloatTensor(total)
    return unmaskeds


def get_weights(model, layer_name="parallel_mlp"):
    weights, names = [], []
    for (n, m) in model.named_modules():
        if isinstance(m, nn.Linear) and (layer_name in n):
            weight = m.weight_orig * m.weight_mask
            weights.append(weight)
            names.append(n)
    return weights, names


def structured_magnitude_pruning_layer(model, amount,
                                       layer_name="parallel_mlp", weighted=1,
                                       type="structured", normalized=1):
    apply_mask_pruning(model, layer_name="parallel_mlp")
    mlist = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and layer_name in n]
    unmaskeds, total = _count_unmasked_weights(mlist, layer_name, type)
    num_surv = int(np.floor(_count_neurons(mlist).sum() * (1.0 - amount)))
    stop = False
    if torch.sum(unmaskeds) == 0:
        stop = True
        return stop

    weights, names = get_weights(model, layer_name)
    flattened_scores = []
    for idx in range(0, len(weights), 2):
        fc1_m, fc2_m = weights[idx], weights[idx + 1]
        concat = torch.cat((fc1_m, fc2_m.T), 1)
        w = torch.sum(torch.abs(concat), 1)
        if normalized:
            w /= concat.shape[1]
        flattened_scores.append(w.view(-1))

    flattened_scores_temp = []
    if weighted == 1:
        for score in flattened_scores:
            maxi = max(score)
            tmp = []
            for item in score:
                if item != 0:
                    item = item / maxi
                tmp.append(item)
            flattened_scores_temp.append(torch.Tensor(tmp))
        flattened_scores = flattened_scores_temp

    sorted = torch.cat(flattened_scores, dim=0)
    if num_surv == 0:
        threshold = torch.Tensor([np.inf])
    else:
        topks, _ = torch.topk(sorted, num_surv)
        threshold = topks[-1]

    final_survs = [
        torch.ge(score,
                 threshold * torch.ones(score.size()).to(score.device)).sum()
        for score in flattened_scores
    ]
    assert len(final_survs) == len(unmaskeds)

    amounts = []
    for i, final_surv in enumerate(final_survs):
        amounts.append(1.0 - (final_surv / total[i]))

    counter = 0
    mlist = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and layer_name in n]
    for idx in range(0, len(mlist), 2):
        (fc1_n, fc1_m), (fc2_n, fc2_m) = mlist[idx], mlist[idx + 1]
        concat = torch.cat((fc1_m.weight, fc2_m.weight.T), 1)
        concat_module = nn.Linear(concat.shape[0], concat.shape[1],
                                  bias=False)
        concat_module.weight = torch.nn.Parameter(concat)
        prune.ln_structured(concat_module, name="weight",
                            amount=float(amounts[counter]), n=1, dim=0)
        max_cols = fc1_m.weight.shape[1]
        mlist[idx][1].weight, mlist[idx][1].weight_mask = torch.clone(
            concat_module.weight[:, :max_cols]), torch.clone(
                concat_module.weight_mask[:, :max_cols])
        mlist[idx + 1][1].weight, mlist[idx + 1][1].weight_mask = \
            torch.clone(concat_module.weight[:, max_cols:].T), \
            torch.clone(concat_module.weight_mask[:, max_cols:].T)
        counter += 1


def official_amounts(rho, rounds):
    """The phase loop of ``main``: the cumulative amount of each phase."""
    amounts = []
    for phase in range(rounds):
        if phase == 0:
            pruning_amount = rho
        else:
            pruning_amount = pruning_amount + (1 - pruning_amount) * rho
        amounts.append(pruning_amount)
    return amounts


class ParallelMlp(nn.Module):
    """The official adapter's parameters (series type, mlp_bias=False)."""

    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=False)


class OfficialAdapters(nn.Module):
    def __init__(self, shapes):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(parallel_mlp=ParallelMlp(c, h)))
            for c, h in shapes)

    def adapters(self):
        return [block['parallel_mlp'] for block in self.blocks]

    def neuron_masks(self):
        masks = []
        for adapter in self.adapters():
            rows = adapter.fc1.weight_mask
            cols = adapter.fc2.weight_mask.T
            # a neuron is pruned as a whole: its row and its column
            assert torch.equal(rows, rows[:, :1].expand_as(rows))
            assert torch.equal(cols, rows)
            masks.append(rows[:, 0].clone())
        return masks


# ------------------------------------------------------------------ harness
# (token width C, hidden neurons): two widths, several hidden sizes.
SHAPES = [(16, 8), (16, 4), (32, 16), (32, 8), (16, 12), (32, 6)]


def set_same_weights(ours, official, downs, ups):
    """Give both models these weights (a 'training' step): ours keeps its
    masked weights zero (set_mask), the official keeps them in weight_orig
    behind its masks, here replaced by garbage that the masks must hide."""
    with torch.no_grad():
        for adapter, mlp, down, up in zip(ours, official.adapters(), downs,
                                          ups):
            adapter.down.weight.copy_(down)
            adapter.up.weight.copy_(up)
            adapter.set_mask(adapter.neuron_mask)
            dead = mlp.fc1.weight_mask == 0
            mlp.fc1.weight_orig.copy_(torch.where(dead, 7.0, down))
            mlp.fc2.weight_orig.copy_(
                torch.where(mlp.fc2.weight_mask == 0, -7.0, up))
            for linear in (mlp.fc1, mlp.fc2):  # a forward: weight = orig*mask
                linear(torch.zeros(1, linear.in_features))


def random_weights(generator):
    downs = [torch.randn(h, c, generator=generator) for c, h in SHAPES]
    ups = [torch.randn(c, h, generator=generator) for c, h in SHAPES]
    return downs, ups


def tied_weights(generator, round_):
    """Every weight of neuron i has magnitude a_i (random signs), so its
    score is exactly a_i: few distinct levels make ties at every threshold;
    adapter 1 scores lowest and empties in the first rounds."""

    def signs(*shape):
        return torch.randint(0, 2, shape, generator=generator) * 2.0 - 1

    downs, ups = [], []
    for j, (c, h) in enumerate(SHAPES):
        levels = torch.randint(1, 4, (h, ), generator=generator) / 8.0
        if j == 1:
            levels = torch.full((h, ), 1 / 64)
        levels = levels * (1 + round_ % 2)  # weights change between rounds
        downs.append(levels[:, None] * signs(h, c))
        ups.append(levels[None, :] * signs(c, h))
    return downs, ups


def run_both(weights_of_round, rho, rounds, weighted):
    """Masks per round from both implementations, on the same weights."""
    ours = [MiMiAdapter(c, h) for c, h in SHAPES]
    official = OfficialAdapters(SHAPES)
    identity_pruning(official)
    plan = official_plan(sum(h for _, h in SHAPES), rho, rounds)
    history = []
    for k, amount in enumerate(official_amounts(rho, rounds)):
        set_same_weights(ours, official, *weights_of_round(k))
        stop = structured_magnitude_pruning_layer(
            official, amount=amount, weighted=int(weighted), normalized=1)
        assert not stop
        masks = official_prune_masks(ours, plan[k + 1], weighted=weighted)
        for adapter, mask in zip(ours, masks.split([h for _, h in SHAPES])):
            adapter.set_mask(mask)
        history.append(([a.neuron_mask.clone() for a in ours],
                        official.neuron_masks()))
    return history


def assert_same_masks(history):
    for k, (mine, theirs) in enumerate(history):
        for j, (a, b) in enumerate(zip(mine, theirs)):
            assert torch.equal(a, b), f'round {k + 1}, adapter {j}'


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize('weighted', [False, True])
def test_random_weights_same_masks_every_round(weighted):
    generator = torch.Generator().manual_seed(0)
    history = run_both(lambda k: random_weights(generator), rho=0.5, rounds=4,
                       weighted=weighted)
    assert_same_masks(history)
    live = [int(sum(m.sum() for m in mine)) for mine, _ in history]
    plan = official_plan(54, 0.5, 4)[1:]
    if weighted:
        # every adapter's best neuron scores 1: six ties once fewer than six
        # survivors are asked for (round 4: 3)
        assert live == plan[:3] + [6]
    else:
        assert live == plan  # no ties: exact counts


@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('rho', [0.5, 0.3])
def test_ties_and_emptied_adapters_same_masks(weighted, rho):
    generator = torch.Generator().manual_seed(1)
    history = run_both(lambda k: tied_weights(generator, k), rho=rho,
                       rounds=4, weighted=weighted)
    assert_same_masks(history)
    plan = official_plan(54, rho, 4)
    live = [int(sum(m.sum() for m in mine)) for mine, _ in history]
    # ties at the threshold keep more than the count asks for
    assert all(n >= p for n, p in zip(live, plan[1:]))
    assert any(n > p for n, p in zip(live, plan[1:]))
    widths = [[int(m.sum()) for m in mine] for mine, _ in history]
    if weighted:
        # each adapter's best neuron scores 1 and survives every threshold
        assert all(min(w) >= 1 for w in widths)
    else:
        assert widths[-1][1] == 0  # the weak adapter emptied completely


def test_official_count_is_float32_like_the_official_sum():
    """official_plan equals the phase loop's counts for many totals and
    rates, and float32 matters: float64 would count otherwise somewhere."""
    differs = False
    for rho in (0.1, 0.2, 0.3, 0.5, 0.9):
        for total in range(1, 400):
            counts = [
                int(np.floor(torch.FloatTensor([total]).sum() *
                             (1.0 - amount)))
                for amount in official_amounts(rho, 6)
            ]
            assert official_plan(total, rho, 6) == [total] + counts
            exact = [int(np.floor(total * (1.0 - amount)))
                     for amount in official_amounts(rho, 6)]
            differs |= exact != counts
    assert differs


def test_nothing_left_is_where_the_official_loop_stops():
    """No survivor asked: every neuron goes (official threshold inf), and the
    official function then answers stop on its next call."""
    ours = [MiMiAdapter(c, h) for c, h in SHAPES]
    assert not official_prune_masks(ours, 0).any()
    official = OfficialAdapters(SHAPES)
    identity_pruning(official)
    structured_magnitude_pruning_layer(official, amount=1.0, weighted=0)
    assert not any(m.any() for m in official.neuron_masks())
    assert structured_magnitude_pruning_layer(official, amount=1.0) is True
