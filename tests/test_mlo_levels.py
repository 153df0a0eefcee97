"""mlo.solve's hypergradients: bilevel and three-level problems with closed-form nested optima."""
import pytest
import torch

from betty_func import hypergrad as hg, mlo, optim, testing

F64 = torch.float64


def rel(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- bilevel
def ridge_problems(p, method, lower_lr=0.0, upper_opt=None, theta0=None):
    lower = mlo.Problem("lower", lambda th, batch, *, upper: p.inner_loss(th, upper),
                        p.solution(p.lam) if theta0 is None else theta0, optim.sgd(lower_lr),
                        hypergrad=method)
    upper = mlo.Problem("upper", lambda lam, batch, *, lower: p.outer_loss(lower, lam), p.lam,
                        upper_opt or optim.sgd(1.0))
    return [lower, upper]


def test_first_upper_update_is_minus_exact_hypergradient():
    p = testing.ridge(d=20, kappa=30.0)
    r = mlo.solve(ridge_problems(p, hg.cg(maxiter=40), lower_lr=0.01), {"upper": ["lower"]},
                  steps=1, logging=mlo.Logging(progress=False, console=False))
    assert rel(r.params["upper"] - p.lam, -p.hypergrad(p.lam)) < 1e-8


def isotropic(h=2.0, n=6, m=3, mu=0.1, seed=0):
    """L = h/2 |θ|² - θᵀBλ (θ* = Bλ/h), F = ½|θ - c|² + μ/2 |λ|²: one SGD step with lr 1/h lands
    on θ*, and the identity approximation with scale 1/h is exact, so every method has the same
    fixed point."""
    g = torch.Generator().manual_seed(seed)
    B, c = torch.randn(n, m, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    M = B / h
    lam_star = torch.linalg.solve(M.T @ M + mu * torch.eye(m, dtype=F64), M.T @ c)
    inner = lambda th, batch, *, upper: 0.5 * h * (th ** 2).sum() - th @ (B @ upper)  # noqa: E731
    outer = lambda lam, batch, *, lower: 0.5 * ((lower - c) ** 2).sum() + 0.5 * mu * (lam ** 2).sum()  # noqa
    return inner, outer, lam_star, n, m, h


@pytest.mark.parametrize("name", ["cg", "neumann", "darts", "unrolled"])
def test_bilevel_converges_to_closed_form_optimum(name):
    inner, outer, lam_star, n, m, h = isotropic()
    lower_opt = optim.sgd(1.0 / h)
    method = {"cg": hg.cg(maxiter=n), "neumann": hg.neumann(steps=3, alpha=1.0 / h),
              "darts": hg.darts(scale=1.0 / h), "unrolled": hg.unrolled(1, lower_opt)}[name]
    lower = mlo.Problem("lower", inner, torch.zeros(n, dtype=F64), lower_opt, hypergrad=method)
    upper = mlo.Problem("upper", outer, torch.zeros(m, dtype=F64), optim.adam(0.05))
    r = mlo.solve([lower, upper], {"upper": ["lower"]}, steps=600,
                  logging=mlo.Logging(progress=False, console=False))
    assert rel(r.params["upper"], lam_star) < 1e-4


@pytest.mark.parametrize("method", [hg.cg(maxiter=20), hg.neumann(steps=300, alpha=1 / 35)],
                         ids=["cg", "neumann"])
def test_ill_conditioned_bilevel_converges_with_implicit_methods(method):
    q = testing.quadratic(d_inner=8, d_outer=3, kappa=30.0, mu=0.5)
    M = torch.linalg.solve(q.H, q.B)
    lam_star = torch.linalg.solve(M.T @ M + q.mu * torch.eye(3, dtype=F64), M.T @ q.c)
    lower = mlo.Problem("lower", lambda th, b, *, upper: q.inner_loss(th, upper),
                        torch.zeros(8, dtype=F64), optim.sgd(1 / 30, momentum=0.5),
                        hypergrad=method, unroll_steps=40)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: q.outer_loss(lower, lam),
                        torch.zeros(3, dtype=F64), optim.sgd(0.1))  # Φ has curvature <= 9.2
    r = mlo.solve([lower, upper], {"upper": ["lower"]}, steps=40 * 150,
                  logging=mlo.Logging(progress=False, console=False))
    assert rel(r.params["upper"], lam_star) < 1e-4


def test_unrolled_window_equals_plain_autograd_through_the_same_updates():
    """unroll_steps=3: the upper's update differentiates through exactly the 3 lower updates
    taken in the window (from the window's start), computed once."""
    p = testing.ridge(d=10, kappa=30.0, n_train=30)
    opt = optim.sgd(0.02, momentum=0.5)
    theta0 = torch.zeros(10, dtype=F64)
    lower = mlo.Problem("lower", lambda th, b, *, upper: p.inner_loss(th, upper), theta0, opt,
                        hypergrad=hg.unrolled(3, opt), unroll_steps=3)
    upper = mlo.Problem("upper", lambda lam, b, *, lower: p.outer_loss(lower, lam), p.lam,
                        optim.sgd(1.0))
    r = mlo.solve([lower, upper], {"upper": ["lower"]}, steps=3,
                  logging=mlo.Logging(progress=False, console=False))
    lam = p.lam.clone().requires_grad_()
    theta, buf = theta0.clone().requires_grad_(), None
    for t in range(3):
        (g,) = torch.autograd.grad(p.inner_loss(theta, lam), theta, create_graph=True)
        buf = g if t == 0 else 0.5 * buf + g
        theta = theta - 0.02 * buf
    (ref,) = torch.autograd.grad(p.outer_loss(theta, lam), lam)
    assert rel(r.params["upper"] - p.lam, -ref) < 1e-10
    assert torch.allclose(r.params["lower"], theta.detach(), rtol=0, atol=1e-13)


# ---------------------------------------------------------------- three levels
class Nested:
    """Bottom B, middle M, top T; every level quadratic, every optimum in closed form.

    L_B = ½ θ_Bᵀ H_B θ_B - θ_Bᵀ (P θ_M + dag·Q θ_T)           (reads M, and T when dag)
    L_M = ½ θ_Mᵀ H_M θ_M - θ_Mᵀ R θ_T + ½ w |θ_B - e|²          (reads B, T)
    L_T = ½ |θ_M - c|² + ½ |θ_B - f|² + ½ μ |θ_T|²              (reads M, B)
    """

    def __init__(self, dag, nb=5, nm=4, nt=3, w=0.7, mu=0.2, seed=0):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
        spd = lambda n, k: testing.quadratic(d_inner=n, d_outer=1, kappa=k, seed=seed + n).H  # noqa
        self.HB, self.HM = spd(nb, 20.0), spd(nm, 30.0)
        self.P, self.Q, self.R = r(nb, nm), r(nb, nt) * dag, r(nm, nt)
        self.e, self.c, self.f = r(nb), r(nm), r(nb)
        self.w, self.mu, self.nb, self.nm, self.nt = w, mu, nb, nm, nt
        self.tT = r(nt)

    def lb(self, b, batch, *, middle, top):
        return 0.5 * b @ (self.HB @ b) - b @ (self.P @ middle + self.Q @ top)

    def lm(self, m, batch, *, bottom, top):
        return (0.5 * m @ (self.HM @ m) - m @ (self.R @ top)
                + 0.5 * self.w * ((bottom - self.e) ** 2).sum())

    def lt(self, t, batch, *, middle, bottom):
        return 0.5 * ((middle - self.c) ** 2).sum() + 0.5 * ((bottom - self.f) ** 2).sum() + \
            0.5 * self.mu * (t ** 2).sum()

    def bottom_star(self, m, t):
        return torch.linalg.solve(self.HB, self.P @ m + self.Q @ t)

    def middle_star(self, t):
        A = torch.linalg.solve(self.HB, self.P)          # dθ_B*/dθ_M
        a = torch.linalg.solve(self.HB, self.Q @ t)      # θ_B* = A θ_M + a
        lhs = self.HM + self.w * A.T @ A
        return torch.linalg.solve(lhs, self.R @ t - self.w * A.T @ (a - self.e))

    def phi(self, t):
        m = self.middle_star(t)
        return self.lt(t, None, middle=m, bottom=self.bottom_star(m, t))

    def fd_hypergrad(self, h=1e-6):
        return torch.stack([(self.phi(self.tT + h * e) - self.phi(self.tT - h * e)) / (2 * h)
                            for e in torch.eye(self.nt, dtype=F64)])

    def problems(self, bottom_method, middle_method, top_lr=1.0):
        m0 = self.middle_star(self.tT)
        return [mlo.Problem("bottom", self.lb, self.bottom_star(m0, self.tT), optim.sgd(1e-3),
                            hypergrad=bottom_method),
                mlo.Problem("middle", self.lm, m0, optim.sgd(1e-3), hypergrad=middle_method),
                mlo.Problem("top", self.lt, self.tT, optim.sgd(top_lr))]


@pytest.mark.parametrize("dag", [0.0, 1.0], ids=["chain", "two_paths"])
def test_three_levels_first_top_update_matches_nested_finite_differences(dag):
    """All levels start at their optimum; CG on the bottom and on the middle level. With dag=1 the
    bottom also reads the top, so the top is reached directly and through the middle: both sum."""
    nz = Nested(dag)
    graph = {"top": ["middle", "bottom"] if dag else ["middle"], "middle": ["bottom"]}
    r = mlo.solve(nz.problems(hg.cg(maxiter=nz.nb), hg.cg(maxiter=nz.nm)), graph, steps=1,
                  logging=mlo.Logging(progress=False, console=False))
    fd = nz.fd_hypergrad()
    assert rel(r.params["top"] - nz.tT, -fd) < 1e-7
    # the lower levels did not move off their optima
    assert rel(r.params["middle"], nz.middle_star(nz.tT)) < 1e-10


def test_three_levels_two_paths_differ_from_one_path():
    """Dropping the direct edge would drop a real term: the two graphs give different updates."""
    nz = Nested(1.0)
    out = []
    for graph in ({"top": ["middle", "bottom"], "middle": ["bottom"]},):
        out.append(mlo.solve(nz.problems(hg.cg(maxiter=5), hg.cg(maxiter=4)), graph, steps=1,
                             logging=mlo.Logging(progress=False, console=False)).params["top"])
    chain_only = Nested(0.0)
    assert rel(out[0] - nz.tT, -nz.fd_hypergrad()) < 1e-7
    assert rel(nz.fd_hypergrad(), chain_only.fd_hypergrad()) > 1e-2


def test_three_levels_neumann_on_the_middle_level():
    nz = Nested(1.0)
    lam_max = float(torch.linalg.eigvalsh(nz.HM + nz.w * torch.linalg.solve(nz.HB, nz.P).T
                                          @ torch.linalg.solve(nz.HB, nz.P))[-1])
    graph = {"top": ["middle", "bottom"], "middle": ["bottom"]}
    r = mlo.solve(nz.problems(hg.cg(maxiter=5), hg.neumann(steps=400, alpha=1.0 / lam_max)), graph,
                  steps=1, logging=mlo.Logging(progress=False, console=False))
    assert rel(r.params["top"] - nz.tT, -nz.fd_hypergrad()) < 1e-6


def test_method_per_edge_overrides_the_problem_default():
    p = testing.ridge(d=20, kappa=30.0)
    exact = ridge_problems(p, {"upper": hg.cg(maxiter=40)})
    rough = ridge_problems(p, {"upper": hg.cg(maxiter=2)})
    run = lambda ps: mlo.solve(ps, {"upper": ["lower"]}, steps=1,  # noqa: E731
                               logging=mlo.Logging(progress=False, console=False)).params["upper"]
    assert rel(run(exact) - p.lam, -p.hypergrad(p.lam)) < 1e-8
    assert rel(run(rough) - p.lam, -p.hypergrad(p.lam)) > 1e-3


class Chain:
    """top > mid > low, the structure that crashed the Function-based scheduler: the middle's
    loss reads its upper and its lower, the top reads the middle only, the bottom its upper.

    L_low = ½ lᵀH_l l - lᵀP m,   L_mid = ½ mᵀH_m m - mᵀR t + ½ w |l - e|²,
    L_top = ½|m - c|² + ½μ|t|²
    """

    def __init__(self, nl=5, nm=4, nt=3, w=0.7, mu=0.2, seed=1):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
        spd = lambda n, k: testing.quadratic(d_inner=n, d_outer=1, kappa=k, seed=seed + n).H  # noqa
        self.Hl, self.Hm = spd(nl, 4.0), spd(nm, 5.0)
        self.P, self.R, self.e, self.c = r(nl, nm), r(nm, nt), r(nl), r(nm)
        self.w, self.mu, self.t0 = w, mu, r(nt)

    def low(self, lv, batch, *, mid):
        return 0.5 * lv @ (self.Hl @ lv) - lv @ (self.P @ mid)

    def mid(self, m, batch, *, low, top):
        return (0.5 * m @ (self.Hm @ m) - m @ (self.R @ top)
                + 0.5 * self.w * ((low - self.e) ** 2).sum())

    def top(self, t, batch, *, mid):
        return 0.5 * ((mid - self.c) ** 2).sum() + 0.5 * self.mu * (t ** 2).sum()

    def mid_star(self, t):
        A = torch.linalg.solve(self.Hl, self.P)  # l* = A m
        return torch.linalg.solve(self.Hm + self.w * A.T @ A, self.R @ t + self.w * A.T @ self.e)

    def phi(self, t):
        return self.top(t, None, mid=self.mid_star(t))

    def fd_hypergrad(self, h=1e-6):
        return torch.stack([(self.phi(self.t0 + h * e) - self.phi(self.t0 - h * e)) / (2 * h)
                            for e in torch.eye(len(self.t0), dtype=F64)])

    def lam_max(self):
        A = torch.linalg.solve(self.Hl, self.P)
        return (float(torch.linalg.eigvalsh(self.Hl)[-1]),
                float(torch.linalg.eigvalsh(self.Hm + self.w * A.T @ A)[-1]))


@pytest.mark.parametrize("kind", ["cg", "neumann"])
def test_three_level_chain_cg_neumann_on_both_lower_levels(kind):
    """20 global steps (the middle unrolls 20 updates per top update), every level at its optimum:
    the top's first update is -lr times the nested finite-difference hypergradient."""
    ch = Chain()
    ll, lm = ch.lam_max()
    low_m, mid_m = ((hg.cg(maxiter=5), hg.cg(maxiter=4)) if kind == "cg" else
                    (hg.neumann(steps=80, alpha=1 / ll), hg.neumann(steps=120, alpha=1 / lm)))
    m0 = ch.mid_star(ch.t0)
    probs = [mlo.Problem("low", ch.low, torch.linalg.solve(ch.Hl, ch.P @ m0), optim.sgd(1e-3),
                         hypergrad=low_m),
             mlo.Problem("mid", ch.mid, m0, optim.sgd(1e-3), hypergrad=mid_m, unroll_steps=20),
             mlo.Problem("top", ch.top, ch.t0, optim.sgd(1.0))]
    r = mlo.solve(probs, {"top": ["mid"], "mid": ["low"]}, steps=20,
                  logging=mlo.Logging(progress=False, console=False, every=1))
    assert [t for t, _ in r.history["top/loss"]] == [20]
    assert rel(r.params["top"] - ch.t0, -ch.fd_hypergrad()) < (1e-7 if kind == "cg" else 1e-5)
    assert rel(r.params["mid"], m0) < 1e-10
