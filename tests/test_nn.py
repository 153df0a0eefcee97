import pytest
import torch
from torch import nn
from torch.func import grad

from betty_func import nn as bnn


def test_functional_equals_module_and_does_not_mutate():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    f = bnn.functional(net)
    x = torch.randn(3, 4)
    assert torch.allclose(f(f.params, x), net(x))
    p2 = {k: v + 1 for k, v in f.params.items()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = f(p2, x)
    assert not torch.allclose(out, net(x))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_grad_matches_autograd():
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    f = bnn.functional(net)
    x = torch.randn(5, 4)
    g = grad(lambda p: f(p, x).pow(2).sum())(f.params)
    net(x).pow(2).sum().backward()
    for k, v in net.named_parameters():
        assert torch.allclose(g[k], v.grad, atol=1e-6)


def test_batchnorm_buffers_are_explicit_state():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    f = bnn.functional(net)
    x = torch.randn(16, 4) * 3 + 1
    (g, new_buffers) = grad(lambda p, b: (lambda o: (o[0].sum(), o[1]))(f.stateful(p, b, x)),
                            has_aux=True)(f.params, f.buffers)
    ref = net(x)  # the module's own update, for comparison
    assert torch.allclose(new_buffers["1.running_mean"], net[1].running_mean)
    assert torch.allclose(new_buffers["1.running_var"], net[1].running_var)
    assert int(new_buffers["1.num_batches_tracked"]) == 1
    assert torch.equal(f.buffers["1.running_mean"], torch.zeros(3))  # input state untouched
    assert ref.shape == (16, 3)
    f(f.params, x)  # the plain call discards updates and never mutates f.buffers
    assert torch.equal(f.buffers["1.running_mean"], torch.zeros(3))


def test_eval_mode_uses_running_statistics():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    f = bnn.functional(net)
    x = torch.randn(8, 4)
    _, bufs = f.stateful(f.params, f.buffers, x)
    fe = f.eval()
    net.eval()
    bnn.load(net, f.params, bufs)
    assert fe.training is False and f.training is True
    assert torch.allclose(fe.stateful(f.params, bufs, x)[0], net(x))


def test_frozen_parameters_are_constants():
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)
    f = bnn.functional(net)
    assert sorted(f.params) == ["weight"]
    assert torch.allclose(f(f.params, torch.ones(1, 3)), net(torch.ones(1, 3)))


def test_load_and_errors():
    net = nn.Linear(3, 2)
    f = bnn.functional(net)
    bnn.load(net, {k: torch.zeros_like(v) for k, v in f.params.items()})
    assert torch.equal(net.weight, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"nn\.load.*names \['wieght'\] are not in the module"):
        bnn.load(net, {"wieght": torch.zeros(2, 3)})
    with pytest.raises(ValueError,
                       match=r"shape of 'weight' differs\. Got \(3, 2\) vs module's \(2, 3\)"):
        bnn.load(net, {"weight": torch.zeros(3, 2)})
    with pytest.raises(TypeError,
                       match=r"nn\.functional\(module\): `module` must be a torch\.nn\.Module"):
        bnn.functional(lambda x: x)
