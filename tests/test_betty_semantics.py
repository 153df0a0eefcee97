"""Betty semantics the front end keeps (found by review): the modules are the state, counts as
Betty counts them, param_callback once per optimizer step, BatchNorm buffers, frozen params, no
batch drawn twice, an unrolled window's batches one per global step, three levels, leaves."""
import pytest
import torch
from torch import nn

from betty_func import hypergrad as hg, mlo, optim as boptim
from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.envs import Env
from betty_func.betty.problems import ImplicitProblem, IterativeProblem

from _betty_small import Inner, Outer, Vec, program


def test_user_module_variables_are_current_and_their_edits_are_taken():
    seen = []
    e = None

    class Watching(Engine):
        def validation(self):
            seen.append(float(mi.w.detach()[0]))    # the user's own module object
            if self.global_step == 2:
                with torch.no_grad():
                    mi.w.fill_(10.0)                  # an edit through it
            return {}
    mi = Vec()
    e = program(engine_cls=Watching, engine_config=EngineConfig(train_iters=3, valid_step=1))
    mi = e.inner.module
    e.run()
    assert seen[0] == pytest.approx(0.05) and seen[1] == pytest.approx(0.09475)
    assert float(e.inner.module.w.detach()[0]) > 8  # one step from 10: the edit was kept


def test_an_edit_before_the_first_step_is_taken():
    e = program(engine_config=EngineConfig(train_iters=1))
    e.inner.load_state_dict({"module": {"w": torch.full((3,), 5.0, dtype=torch.float64)}})
    e.run()
    # one SGD step from 5: w - 0.1 (2w - λ), λ = 0.5
    assert float(e.inner.module.w.detach()[0]) == pytest.approx(5 - 0.1 * (10 - 0.5))


def test_count_inside_training_step_is_bettys():
    counts = []

    class Counting(Inner):
        def training_step(self, batch):
            counts.append(self.count)
            return super().training_step(batch)
    e = program(inner_cls=Counting, engine_config=EngineConfig(train_iters=3))
    e.run()
    assert sorted(set(counts)) == [1, 2, 3]  # incremented before the local step, as Betty


@pytest.mark.parametrize("gas", [1, 2])
def test_param_callback_once_per_optimizer_step(gas):
    calls = []

    class Halving(Inner):
        def param_callback(self):
            calls.append(self.count)
            for p in self.trainable_parameters():
                p.data.mul_(0.5)
    e = program(inner_cls=Halving, inner_config=Config(type="cg", gradient_accumulation=gas),
                engine_config=EngineConfig(train_iters=4))
    e.run()
    assert calls == [1, 2, 3, 4] if gas == 1 else calls == [2, 4]


class BN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        self.bn = nn.BatchNorm1d(2).double()

    def forward(self, x):
        return self.bn(self.lin(x))


@pytest.mark.parametrize("callback", [False, True])
def test_batchnorm_buffers_advance_with_the_lowers_updates(callback):
    """The running statistics follow the lower's own updates (also with a param_callback),
    equal to a plain torch loop over the same batches (the upper is a constant here)."""
    torch.manual_seed(0)
    x = torch.randn(6, 8, 2, dtype=torch.float64)

    class Lower(ImplicitProblem):
        def training_step(self, batch):
            return ((self.module(batch) - self.upper()) ** 2).mean()
        if callback:
            def param_callback(self):
                for p in self.trainable_parameters():
                    p.data.clamp_(-10, 10)

    class Upper(ImplicitProblem):
        def training_step(self, batch):
            return (self.lower.module.lin.weight ** 2).sum() * 0 + (self.lower(batch) ** 2).mean()
    m, u = BN(), Vec(n=2, value=0.5)
    ref = BN()
    ref.load_state_dict(m.state_dict())
    lo = Lower("lower", Config(type="cg"), m, torch.optim.SGD(m.parameters(), lr=0.1),
               train_data_loader=list(x))
    up = Upper("upper", Config(), u, torch.optim.SGD(u.parameters(), lr=0.0),
               train_data_loader=list(x))
    e = Engine([up, lo], EngineConfig(train_iters=6), {"u2l": {up: [lo]}, "l2u": {lo: [up]}})
    e.run()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for b in x:
        opt.zero_grad()
        ((ref(b) - u.w.detach()) ** 2).mean().backward()
        opt.step()
    assert int(m.bn.num_batches_tracked) == 6
    torch.testing.assert_close(m.bn.running_mean, ref.bn.running_mean)
    torch.testing.assert_close(m.bn.running_var, ref.bn.running_var)
    torch.testing.assert_close(m.lin.weight.detach(), ref.lin.weight.detach())


def test_frozen_parameter_and_an_optimizer_over_the_trainable_ones():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
            self.frozen = nn.Parameter(torch.ones(3, dtype=torch.float64), requires_grad=False)

        def forward(self):
            return self.w
    m = Two()

    class Lower(Inner):
        def training_step(self, batch):
            return super().training_step(batch) + (self.module.frozen * self.module.w).sum()
    p = Lower("inner", Config(type="cg"), m, torch.optim.SGD(
        [q for q in m.parameters() if q.requires_grad], lr=0.1),
        train_data_loader=[(torch.zeros(1),)])
    mo = Vec(value=0.5)
    o = Outer("outer", module=mo, optimizer=torch.optim.SGD(mo.parameters(), lr=0.1),
              train_data_loader=[(torch.zeros(1),)])
    e = Engine([o, p], EngineConfig(train_iters=1), {"u2l": {o: [p]}, "l2u": {p: [o]}})
    e.run()
    torch.testing.assert_close(m.w.detach(), torch.full((3,), -0.1 * (1 - 0.5),
                                                        dtype=torch.float64))
    assert torch.equal(m.frozen, torch.ones(3, dtype=torch.float64))


def test_get_batch_is_called_once_per_local_step():
    calls = []

    class Drawing(Inner):
        def get_batch(self):
            calls.append(len(calls))
            return (torch.tensor([float(len(calls))]),)
    e = program(inner_cls=Drawing, engine_config=EngineConfig(train_iters=3))
    e.run()
    assert calls == [0, 1, 2] and e.inner.cur_batch[0].item() == 3.0


def test_unrolled_window_takes_one_batch_per_global_step():
    """An IterativeProblem's K updates use the env's batch of each of the K global steps
    (reverse mode through them checked against a hand loop)."""
    class Steps(Env):
        def __init__(self):
            super().__init__()
            self.batch = None

        def step(self):
            self.batch = torch.full((3,), float(self.t), dtype=torch.float64)
            self.t += 1

    class Unrolled(IterativeProblem):
        def training_step(self, batch):
            return 0.5 * ((self.module.w - self.outer() * batch) ** 2).sum()

        def get_batch(self):
            return self.env.batch

        def on_inner_loop_start(self):
            self.module.w.data.zero_()

    class Stepping(Engine):
        def train_step(self):
            self.env.step()
            super().train_step()
    env = Steps()
    env.t = 1
    e = program(inner_cls=Unrolled, inner_config=Config(unroll_steps=3), lr=0.5, outer_lr=1.0,
                engine_cls=Stepping, engine_config=EngineConfig(train_iters=3), env=env)
    lam0 = e.outer.module.w.detach().clone()
    e.run()
    lam = lam0.clone().requires_grad_(True)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for c in (1.0, 2.0, 3.0):
        w = w - 0.5 * (w - lam * c)
    (g,) = torch.autograd.grad(0.5 * ((w - 1.0) ** 2).sum(), lam)
    torch.testing.assert_close(lam0 - e.outer.module.w.detach(), g, rtol=1e-12, atol=1e-15)
    assert e.inner.count == 3


class Bot(ImplicitProblem):
    def training_step(self, b):
        return 0.5 * ((self.module.w - self.mid()) ** 2).sum() + 0.5 * (self.module.w ** 2).sum()


class Mid(ImplicitProblem):
    def training_step(self, b):
        return 0.5 * ((self.bot() - self.top()) ** 2).sum() + 0.5 * (self.module.w ** 2).sum()


class Top(ImplicitProblem):
    def training_step(self, b):
        return 0.5 * ((self.mid() - 1.0) ** 2).sum()


def test_three_levels_equal_the_mlo_program():
    """A chain whose top reads only the middle (its mid's gradient depends on the top only
    through the bottom's response) equals the same program written with mlo."""
    mods = [Vec(), Vec(value=0.2), Vec(value=0.5)]
    start = [m.w.detach().clone() for m in mods]
    data = [(torch.zeros(1),)]

    def make(cls, n, m, c):
        return cls(n, c, module=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
                   train_data_loader=data)
    bot = make(Bot, "bot", mods[0], Config(type="cg", cg_iterations=3))
    mid = make(Mid, "mid", mods[1], Config(type="cg", cg_iterations=3))
    top = make(Top, "top", mods[2], Config())
    e = Engine([top, mid, bot], EngineConfig(train_iters=4),
               {"u2l": {top: [mid], mid: [bot]}, "l2u": {bot: [mid], mid: [top]}})
    e.run()
    probs = [mlo.Problem("bot", lambda w, b, *, mid: 0.5 * ((w["w"] - mid["w"]) ** 2).sum()
                         + 0.5 * (w["w"] ** 2).sum(), {"w": start[0]}, boptim.sgd(0.1),
                         hypergrad=hg.cg(maxiter=3)),
             mlo.Problem("mid", lambda w, b, *, bot, top: 0.5 * ((bot["w"] - top["w"]) ** 2).sum()
                         + 0.5 * (w["w"] ** 2).sum(), {"w": start[1]}, boptim.sgd(0.1),
                         hypergrad=hg.cg(maxiter=3)),
             mlo.Problem("top", lambda w, b, *, mid: 0.5 * ((mid["w"] - 1.0) ** 2).sum(),
                         {"w": start[2]}, boptim.sgd(0.1))]
    ref = mlo.solve(probs, {"top": ["mid"], "mid": ["bot"]}, steps=4,
                    logging=mlo.Logging(progress=False, console=False))
    for n in ("bot", "mid", "top"):
        assert not torch.equal(ref.params[n]["w"], start[("bot", "mid", "top").index(n)])
        torch.testing.assert_close(getattr(e, n).module.w.detach(), ref.params[n]["w"],
                                   rtol=1e-12, atol=1e-15)


def test_stepping_only_some_leaves_is_refused():
    data = [(torch.zeros(1),)]
    ms = [Vec(), Vec(), Vec(value=0.5)]
    a, b = (Inner(n, Config(type="cg"), m, torch.optim.SGD(m.parameters(), lr=0.1),
                  train_data_loader=data) for n, m in (("a", ms[0]), ("b", ms[1])))

    class Both(ImplicitProblem):
        def training_step(self, batch):
            return 0.5 * (((self.a.module.w - 1) ** 2).sum() + ((self.b.module.w - 1) ** 2).sum())

    class Alternating(Engine):
        def train_step(self):
            self.leaves[self.global_step % 2].step(global_step=self.global_step)
    o = Both("outer", Config(), ms[2], torch.optim.SGD(ms[2].parameters(), lr=0.1),
             train_data_loader=data)
    e = Alternating([o, a, b], EngineConfig(train_iters=3),
                    {"u2l": {o: [a, b]}, "l2u": {a: [o], b: [o]}})
    assert [p.name for p in e.leaves] == ["a", "b"]
    with pytest.raises(ValueError, match="stepped the leaves \\['b'\\] but not \\['a'\\]"):
        e.run()


def test_replacing_the_module_and_bad_loaders_are_refused():
    e = program()
    with pytest.raises(AttributeError, match="cannot be replaced once it belongs to an Engine"):
        e.inner.module = Vec()
    with pytest.raises(TypeError, match="train_data_loader of 'inner' is not iterable"):
        _with_loader(5)
    with pytest.raises(TypeError, match="one-shot iterator"):
        _with_loader(iter([(torch.zeros(1),)]))
    e = _with_loader([])
    with pytest.raises(ValueError, match="yields no batch"):
        e.run()


def _with_loader(loader):
    mi, mo = Vec(), Vec(value=0.5)
    i = Inner("inner", Config(type="cg"), mi, torch.optim.SGD(mi.parameters(), lr=0.1),
              train_data_loader=loader)
    o = Outer("outer", Config(), mo, torch.optim.SGD(mo.parameters(), lr=0.1),
              train_data_loader=[(torch.zeros(1),)])
    return Engine([o, i], EngineConfig(train_iters=2), {"u2l": {o: [i]}, "l2u": {i: [o]}})


def test_rate_changed_through_the_users_own_optimizer_is_refused():
    e = program(engine_config=EngineConfig(train_iters=2))
    opt = e.inner.optimizer
    e.run()
    opt.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match="its learning rate was changed"):
        e.train_step()



def test_a_module_shared_by_two_problems_is_refused():
    m, data = Vec(), [(torch.zeros(1),)]
    i = Inner("inner", Config(type="cg"), m, torch.optim.SGD(m.parameters(), lr=0.1),
              train_data_loader=data)
    o = Outer("outer", Config(), m, torch.optim.SGD(m.parameters(), lr=0.1),
              train_data_loader=data)
    with pytest.raises(ValueError, match="share a parameter"):
        Engine([o, i], EngineConfig(train_iters=1), {"u2l": {o: [i]}, "l2u": {i: [o]}})
