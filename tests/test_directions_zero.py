"""landscapes.directions.random at zero weights: a normalized direction is scaled by the weights' norms, so all-zero
weights would give zero directions (a flat surface). That is refused with a ValueError naming the parameters."""
import pytest
import torch

import landscapes as ls


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("norm", ["filter", "layer", "model"])
def test_all_zero_weights_raise_naming_the_parameters(norm):
    m = mlp()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError) as exc:
        ls.directions.random(m, n=2, norm=norm, seed=0)
    msg = str(exc.value)
    assert "0.weight" in msg and "2.weight" in msg and "all zero" in msg and "norm='none'" in msg
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))      # the model is untouched
    d = ls.directions.random(m, n=2, norm="none", seed=0)                      # what the message offers works
    assert (d.vectors.norm(dim=1) > 0).all()


def test_weights_zero_but_ignored_biases_not():
    m = mlp()
    with torch.no_grad():
        m[0].weight.zero_()
        m[2].weight.zero_()
    with pytest.raises(ValueError, match="ignore=()"):
        ls.directions.random(m, norm="filter")
    d = ls.directions.random(m, norm="filter", ignore=())       # biases are non-zero: they move
    assert (d.vectors.norm(dim=1) > 0).all()


def test_some_zero_filters_keep_the_documented_behaviour():
    m = mlp()
    with torch.no_grad():
        m[0].weight[1].zero_()                  # one dead neuron: its filter gets a zero direction, no error
    d = ls.directions.random(m, n=1, norm="filter", seed=0)
    w0 = d.vectors[0][: 12].reshape(4, 3)
    assert torch.count_nonzero(w0[1]) == 0 and torch.count_nonzero(w0[0]) == 3
    # filter normalization: every other filter has the norm of its weights
    torch.testing.assert_close(w0.norm(dim=1)[[0, 2, 3]], m[0].weight.detach().norm(dim=1)[[0, 2, 3]])
