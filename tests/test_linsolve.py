import numpy as np
import pytest
import torch

from betty_func import linsolve

F64 = torch.float64


def spd(d=12, kappa=30.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    A = q @ torch.diag(torch.logspace(0, np.log10(kappa), d, dtype=F64)) @ q.T
    return A, torch.randn(d, generator=g, dtype=F64)


def as_tree(v):  # exercise pytrees: split a vector into a dict of two leaves
    return {"a": v[:5].reshape(5, 1), "b": v[5:]}


def from_tree(t):
    return torch.cat([t["a"].reshape(-1), t["b"]])


def tree_matvec(A):
    return lambda t: as_tree(A @ from_tree(t))


def textbook_cg(A, b, k):
    x, r = np.zeros_like(b), b.copy()
    p, rs = r.copy(), r @ r
    for _ in range(k):
        ap = A @ p
        a = rs / (p @ ap)
        x, r = x + a * p, r - a * ap
        rs, rs_old = r @ r, rs
        p = r + rs / rs_old * p
    return x


@pytest.mark.parametrize("k", [1, 3, 7])
def test_cg_equals_textbook_iterates(k):
    A, b = spd()
    x = from_tree(linsolve.cg(maxiter=k)(tree_matvec(A), as_tree(b)))
    ref = textbook_cg(A.numpy(), b.numpy(), k)
    assert np.allclose(x.numpy(), ref, rtol=0, atol=1e-12)


def test_cg_full_dimension_is_exact_and_reports_residual():
    A, b = spd()
    x, info = linsolve.cg(maxiter=12).with_info(tree_matvec(A), as_tree(b))
    exact = torch.linalg.solve(A, b)
    assert (from_tree(x) - exact).norm() <= 1e-10 * exact.norm()
    assert info.residual_norm <= 1e-9 and int(info.iterations) <= 12
    assert torch.isclose(info.residual_norm, (A @ from_tree(x) - b).norm(), atol=1e-12)


def test_cg_tolerance_stops_without_changing_x():
    A, b = spd()
    x_tol, info = linsolve.cg(maxiter=50, tol=1e-2).with_info(tree_matvec(A), as_tree(b))
    k = int(info.iterations)
    assert 0 < k < 12 and info.residual_norm <= 1e-2 * b.norm()
    x_k = linsolve.cg(maxiter=k)(tree_matvec(A), as_tree(b))
    assert torch.equal(from_tree(x_tol), from_tree(x_k))


def test_cg_damping_and_warm_start():
    A, b = spd()
    x = linsolve.cg(maxiter=12, damping=0.5)(tree_matvec(A), as_tree(b))
    exact = torch.linalg.solve(A + 0.5 * torch.eye(12, dtype=F64), b)
    assert (from_tree(x) - exact).norm() <= 1e-10 * exact.norm()
    exact = torch.linalg.solve(A, b)
    near = as_tree(exact + 1e-3 * torch.randn(12, dtype=F64))
    _, cold = linsolve.cg(maxiter=3).with_info(tree_matvec(A), as_tree(b))
    _, warm = linsolve.cg(maxiter=3).with_info(tree_matvec(A), as_tree(b), init=near)
    assert warm.residual_norm < 1e-2 * cold.residual_norm


def test_cg_batch_dims_solves_each_system_alone():
    """A leading dimension of independent systems (one per task): batch_dims=1 equals a CG on
    each system alone, iterates and tolerance included; a joint CG over the block-diagonal
    system is a different (slower) iteration."""
    g = torch.Generator().manual_seed(0)
    mats = []
    for kappa in (3.0, 50.0, 400.0):
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        mats.append(q @ torch.diag(torch.linspace(1.0, kappa, 6, dtype=torch.float64)) @ q.T)
    A = torch.stack(mats)
    b = {"w": torch.randn(3, 6, generator=g, dtype=torch.float64)}
    mv = lambda v: {"w": torch.einsum("bij,bj->bi", A, v["w"])}  # noqa: E731
    for k in (2, 4, 6):
        x, info = linsolve.cg(k, tol=1e-3, batch_dims=1).with_info(mv, b)
        alone = [linsolve.cg(k, tol=1e-3)(lambda v, a=a: a @ v, b["w"][i]) for i, a in enumerate(A)]
        assert torch.allclose(x["w"], torch.stack(alone), rtol=1e-10, atol=1e-12)
    joint = linsolve.cg(4)(mv, b)["w"]
    assert not torch.allclose(joint, linsolve.cg(4, batch_dims=1)(mv, b)["w"], atol=1e-3)
    assert int(info.iterations) <= 6 and info.residual_norm.dim() == 0


def test_cg_batch_dims_with_one_scalar_per_task():
    """A leaf of shape (T,) (one scalar unknown per task, beside a (T, 3) leaf) is part of each
    task's system, not an error; a leaf without the task dimension is refused by name."""
    g = torch.Generator().manual_seed(1)
    d = torch.rand(4, 4, generator=g, dtype=torch.float64) + 0.5  # a diagonal system per task
    b = {"s": torch.randn(4, generator=g, dtype=torch.float64),
         "w": torch.randn(4, 3, generator=g, dtype=torch.float64)}
    mv = lambda v: {"s": d[:, 0] * v["s"], "w": d[:, 1:] * v["w"]}  # noqa: E731
    x = linsolve.cg(4, batch_dims=1)(mv, b)
    assert torch.allclose(x["s"], b["s"] / d[:, 0], rtol=1e-12)
    assert torch.allclose(x["w"], b["w"] / d[:, 1:], rtol=1e-12)
    with pytest.raises(ValueError, match=r"linsolve\.cg.*batch_dims=1 every leaf needs the same "
                       r"leading batch dimension.*\[\(\), \(4, 3\)\]"):
        linsolve.cg(4, batch_dims=1)(mv, {"s": torch.ones(()), "w": b["w"]})
    with pytest.raises(ValueError, match=r"\[\(5,\), \(4, 3\)\]"):
        linsolve.cg(4, batch_dims=1)(mv, {"s": torch.ones(5), "w": b["w"]})


def test_neumann_equals_truncated_series_and_converges():
    A, b = spd()
    alpha, M, eye = 1.0 / 35, A.numpy(), np.eye(12)
    errs = []
    for k in (1, 5, 50, 400):
        x = from_tree(linsolve.neumann(steps=k, alpha=alpha)(tree_matvec(A), as_tree(b))).numpy()
        series = alpha * sum(np.linalg.matrix_power(eye - alpha * M, j) @ b.numpy()
                             for j in range(k + 1))
        assert np.allclose(x, series, rtol=1e-12, atol=1e-12)
        errs.append(np.linalg.norm(x - np.linalg.solve(M, b.numpy())))
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-3 * errs[0]


def test_identity_and_dense():
    A, b = spd()
    assert torch.equal(from_tree(linsolve.identity(0.5)(tree_matvec(A), as_tree(b))), 0.5 * b)
    x, info = linsolve.dense().with_info(tree_matvec(A), as_tree(b))
    assert torch.allclose(from_tree(x), torch.linalg.solve(A, b), rtol=0, atol=1e-13)
    nonsym = A + torch.triu(torch.ones(12, 12, dtype=F64), 1)
    x = linsolve.dense()(lambda v: nonsym @ v, b)
    assert torch.allclose(nonsym @ x, b, atol=1e-12)


def test_solvers_run_under_vmap():
    A, _ = spd()
    bs = torch.randn(4, 12, dtype=F64)
    for solver in (linsolve.cg(maxiter=12), linsolve.neumann(10, 0.03), linsolve.dense()):
        batched = torch.vmap(lambda b: solver(lambda v: A @ v, b))(bs)
        loop = torch.stack([solver(lambda v: A @ v, b) for b in bs])
        assert torch.allclose(batched, loop, atol=1e-12)


@pytest.mark.parametrize("make,match", [
    (lambda: linsolve.cg(maxiter=-1), r"linsolve\.cg.*`maxiter` must be an integer >= 0\. Got -1"),
    (lambda: linsolve.cg(tol=-1.0), r"`tol` must be a number >= 0"),
    (lambda: linsolve.neumann(steps=3, alpha=0.0),
     r"linsolve\.neumann.*`alpha` must be a number > 0\. Got 0\.0"),
    (lambda: linsolve.neumann(steps=3, alpha=-1.0), r"`alpha` must be a number > 0\. Got -1\.0"),
    (lambda: linsolve.neumann(steps=-2), r"`steps` must be an integer >= 0\. Got -2"),
    (lambda: linsolve.identity(0), r"`scale` must be a number > 0"),
])
def test_bad_solver_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_solve_inputs():
    solver = linsolve.cg(maxiter=2)
    with pytest.raises(ValueError, match=r"linsolve\.cg.*leaf .* of `b` is not a floating-point"):
        solver(lambda v: v, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"`init` and `b` are pytrees of different structure"):
        solver(lambda v: v, {"a": torch.ones(2)}, init={"c": torch.ones(2)})


def test_dense_refuses_a_matrix_that_cannot_fit_before_allocating(monkeypatch):
    """4 n² entries against the device's free memory: n = 10⁷ (1.4 PiB) anywhere; with 1 MB
    free, n = 1000 (16 MB) is refused and n = 100 (160 kB) solves."""
    with pytest.raises(ValueError, match=r"linsolve\.dense.*n=10,000,000 unknowns needs at least "
                       r"1\.49e\+06 GiB, and cpu has .* GiB free\. Use an iterative solver"):
        linsolve.dense()(lambda v: v, torch.zeros(10 ** 7))
    monkeypatch.setattr("betty_func.linsolve._base.free_bytes", lambda device: 10 ** 6)
    with pytest.raises(ValueError, match=r"n=1,000 unknowns needs at least 0\.0149 GiB"):
        linsolve.dense().with_info(lambda v: v, {"w": torch.zeros(10, 100)})
    assert torch.equal(linsolve.dense()(lambda v: 2 * v, torch.ones(100)), torch.full((100,), 0.5))


def test_exact_in_solve_is_refused_at_step_0_in_the_problem_name(monkeypatch):
    from betty_func import hypergrad as hg, mlo, optim
    monkeypatch.setattr("betty_func.linsolve._base.free_bytes", lambda device: 10 ** 6)
    lo = mlo.Problem("lower", lambda w, batch, *, upper: ((w - upper) ** 2).sum(),
                     torch.zeros(1000), optim.sgd(0.1), hypergrad=hg.exact())
    hi = mlo.Problem("upper", lambda lam, batch, *, lower: (lower ** 2).sum() + lam.sum() ** 2,
                     torch.ones(1000), optim.sgd(0.1))
    counted = []
    hi = mlo.Problem("upper", hi.loss, hi.params,
                     optim.Optimizer(hi.optimizer.init, lambda *a: counted.append(1) or
                                     hi.optimizer.update(*a)))
    with pytest.raises(ValueError, match=r"n=1,000 unknowns \(the params of 'lower'\) needs"):
        mlo.solve([lo, hi], {"upper": ["lower"]}, steps=2,
                  logging=mlo.Logging(progress=False, console=False))
    assert not counted  # before any update
