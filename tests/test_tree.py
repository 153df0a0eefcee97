from collections import namedtuple

import pytest
import torch

from betty_func import tree

F64 = torch.float64


def make(scale=1.0):
    return {"w": scale * torch.arange(6, dtype=F64).reshape(2, 3), "b": (torch.ones(2, dtype=F64),)}


def test_arithmetic_matches_flat_vectors():
    a, b = make(), make(0.5)
    fa, un = tree.ravel(a)
    fb, _ = tree.ravel(b)
    assert torch.equal(tree.ravel(tree.add(a, b))[0], fa + fb)
    assert torch.equal(tree.ravel(tree.sub(a, b))[0], fa - fb)
    assert torch.equal(tree.ravel(tree.axpy(2.0, a, b))[0], 2 * fa + fb)
    assert torch.equal(tree.ravel(tree.scale(3.0, a))[0], 3 * fa)
    assert torch.equal(tree.ravel(tree.neg(a))[0], -fa)
    assert tree.vdot(a, b) == fa @ fb
    assert torch.isclose(tree.norm(a), fa.norm())
    assert tree.structure(un(fa)) == tree.structure(a)
    assert all(torch.equal(x, y) for x, y in zip(tree.leaves(un(fa)), tree.leaves(a)))


def test_like_and_where():
    a = make()
    assert all((x == 0).all() for x in tree.leaves(tree.zeros_like(a)))
    assert all((x == 1).all() for x in tree.leaves(tree.ones_like(a)))
    w = tree.where(torch.tensor(False), a, tree.zeros_like(a))
    assert all((x == 0).all() for x in tree.leaves(w))
    knob = {"x": torch.ones(2), "k": 3}  # a non-tensor leaf is taken from the first tree
    kept = tree.where(torch.tensor(False), knob, {"x": torch.zeros(2), "k": 4})
    assert kept["k"] == 3 and torch.equal(kept["x"], torch.zeros(2))


def test_all_finite():
    a = make()
    assert bool(tree.all_finite(a)) and bool(tree.all_finite({}))
    for bad in (float("nan"), float("inf"), -float("inf")):
        b = tree.map(torch.clone, a)
        tree.leaves(b)[-1].view(-1)[0] = bad
        assert not bool(tree.all_finite(b))
    huge = {"x": torch.full((4,), 3e38)}  # the sum would overflow; 0 * x does not
    assert bool(tree.all_finite(huge))
    assert bool(tree.all_finite({"i": torch.ones(2, dtype=torch.int64), "x": torch.ones(1)}))


def test_partition_combine_roundtrip_with_namedtuple():
    State = namedtuple("State", "count buf")
    s = State(torch.tensor(3), {"w": torch.ones(2)})
    floats, rest = tree.partition(tree.is_float, s)
    assert floats.count is None and rest.buf["w"] is None
    back = tree.combine(floats, rest)
    assert back.count is s.count and back.buf["w"] is s.buf["w"]


def test_check_same_structure_error():
    with pytest.raises(ValueError,
                       match=r"api: `a` and `b` are pytrees of different structure\. Got"):
        tree.check_same("api", {"w": torch.ones(2)}, {"v": torch.ones(2)}, ("a", "b"))


def test_check_same_shape_error_names_leaf():
    with pytest.raises(ValueError, match=r"leaf .*w.* differ in shape\. Got \(2,\) vs \(3,\)"):
        tree.check_same("api", {"w": torch.ones(2)}, {"w": torch.ones(3)}, ("a", "b"))


def test_check_float_errors():
    with pytest.raises(ValueError, match=r"leaf .*n.* of `p` is not a floating-point tensor\. "
                                         r"Got Tensor torch\.int64"):
        tree.check_float("api", {"n": torch.tensor([1, 2]), "w": torch.ones(1)}, "p")
    with pytest.raises(ValueError, match=r"`p` has no tensors"):
        tree.check_float("api", {}, "p")
    with pytest.raises(ValueError, match=r"not a floating-point tensor\. Got float"):
        tree.check_float("api", {"w": 1.0}, "p")
