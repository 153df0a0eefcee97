"""The Betty front end's engine: Betty's counting and stepping semantics, its hooks and the
dialects of Betty 0.1.1 and HEAD (BETTY_API.md §10-11), and every refusal with its message."""
import copy

import pytest
import torch
import torch.nn.functional as F

import betty_func.betty as betty
from betty_func.betty import Engine as TopEngine
from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.envs import Env
from betty_func.betty.problems import ImplicitProblem

from _betty_small import Inner, Outer, Vec, mlo_twin, program


def test_import_forms():
    assert TopEngine is Engine is betty.engine.Engine
    assert betty.configs.Config is Config and betty.__version__ == "0.2.1"
    from betty_func.betty.configs.engine_dataclass import EngineConfig as E2
    from betty_func.betty.configs.problem_dataclass import Config as C2
    assert E2 is EngineConfig and C2 is Config


def test_counts_after_ten_train_steps():
    """Betty's engine test: unroll_steps=10, ten direct train_step() calls: inner 10, outer 1."""
    e = program(inner_config=Config(type="cg", unroll_steps=10))
    for _ in range(10):
        e.train_step()
    assert e.inner.count == 10 and e.outer.count == 1
    assert hasattr(e, "inner") and e.leaves == [e.inner]
    assert e.inner.outer is e.outer and e.outer.inner is e.inner


def test_fixed_point_of_the_small_program():
    """w* = λ/2 and the upper drives w* to 1, so λ → 2 (cg is exact on this quadratic)."""
    e = program(engine_config=EngineConfig(train_iters=400), lr=0.5, outer_lr=1.0,
                inner_config=Config(type="cg", cg_iterations=3, unroll_steps=5))
    e.run()
    torch.testing.assert_close(e.outer.module.w.detach(), torch.full((3,), 2.0,
                                                                     dtype=torch.float64))
    torch.testing.assert_close(e.inner.module.w.detach(), torch.ones(3, dtype=torch.float64))


def test_direct_training_step_after_run():
    e = program()
    e.run()
    value = e.outer.training_step(e.outer.cur_batch)
    expected = 0.5 * ((e.inner.module.w.detach() - 1.0) ** 2).sum()
    torch.testing.assert_close(value.detach(), expected)


@pytest.mark.parametrize("dialect", ["head", "0.1.1"])
def test_param_callback_dialects(dialect):
    class Clamped(Outer):
        if dialect == "head":
            def param_callback(self):
                for p in self.trainable_parameters():
                    p.data.clamp_(max=0.55)
        else:
            def param_callback(self, params):
                for p in params:
                    p.data.clamp_(max=0.55)
    e = program(outer_cls=Clamped, outer_lr=10.0)
    e.run()
    assert float(e.outer.module.w.detach().max()) == pytest.approx(0.55)


def test_on_inner_loop_start_zeroes_each_inner_loop():
    starts = []

    class Restarting(Inner):
        def on_inner_loop_start(self):
            starts.append(self.count)
            self.module.w.data.zero_()
    e = program(inner_cls=Restarting, inner_config=Config(type="cg", unroll_steps=2),
                engine_config=EngineConfig(train_iters=6))
    e.run()
    assert starts == [0, 2, 4]  # before the first local step of each unroll


def test_config_dialects():
    assert Config(step=3).unroll_steps == 3 and Config(steps=2).unroll_steps == 2
    assert Config(fp16=True).precision == "fp16" and Config(precision="fp16").fp16
    assert Config().precision == "fp32" and Config(precision="bf16").autocast == "bf16"
    with pytest.raises(ValueError, match="old name of `unroll_steps`"):
        Config(step=2, unroll_steps=3)
    with pytest.raises(ValueError, match="`fp16=True` and `precision` disagree"):
        Config(fp16=True, precision="bf16")
    assert EngineConfig(strategy="cpu").strategy == "cpu"
    with pytest.raises(ValueError, match="distributed=True is not supported"):
        EngineConfig(distributed=True)
    with pytest.raises(ValueError, match="strategy='fsdp' is not supported"):
        EngineConfig(strategy="fsdp")
    with pytest.raises(TypeError, match="`roll_back` must be True or False"):
        EngineConfig(roll_back="yes")
    with pytest.raises(ValueError, match="`type` must be one of"):
        Config(type="dart")


def test_device_dialects():
    e = program(device="cpu", env=Env())
    assert str(e.device) == "cpu" and e.env.device == e.device and e.inner.device == e.device
    assert e.env.inner is e.inner
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA, which this machine does not have"):
            program(device="cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_bf16_and_fp16_run_on_cpu(precision):
    """Betty's bf16 did nothing on CPU and its fp16 asserted CUDA; both run here (autocast)."""
    e = program(inner_config=Config(type="cg", precision=precision), dtype=torch.float32,
                engine_config=EngineConfig(train_iters=3))
    assert {p.name: p.precision for p in e._mlo}["inner"] == precision
    e.run()
    assert e.inner.module.w.dtype == torch.float32
    assert 0.05 < float(e.inner.module.w.detach()[0]) < 0.5  # moved toward λ/2 = 0.25


def test_metrics_logged_every_log_step(capsys):
    class Logged(Outer):
        def training_step(self, batch):
            loss = super().training_step(batch)
            return {"loss": loss, "dist": float(loss.detach()) * 2}
    e = program(outer_cls=Logged, outer_config=Config(log_step=2))
    e.run()
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith('[Problem "outer"]')]
    assert len(lines) == 2 and "[Global Step 2] [Local Step 2]" in lines[0]
    assert "outer/loss:" in lines[0] and "outer/dist:" in lines[0]


def test_tensorboard_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = program(outer_config=Config(log_step=1), engine_config=EngineConfig(
        train_iters=2, logger_type="tensorboard"))
    e.run()
    assert list(tmp_path.glob("betty_tensorboard/*/events.out.tfevents.*"))


def test_validation_and_early_stopping(capsys):
    calls = []

    class Stopping(Engine):
        def validation(self):
            calls.append(self.global_step)
            assert not self.inner._training  # problems are in eval mode
            return {"loss": 1.0}            # never improves after the first
    e = program(engine_cls=Stopping, engine_config=EngineConfig(
        train_iters=50, valid_step=2, early_stopping=True, early_stopping_tolerance=2))
    e.run()
    assert calls == [2, 4, 6] and e.global_step == 6 and e.inner._training


def test_state_dict_round_trip():
    e = program()
    e.run()
    saved = copy.deepcopy(e.inner.state_dict())  # as torch: the dict aliases the module
    w = e.inner.module.w.detach().clone()
    e.train_step()
    e.inner.load_state_dict(saved)
    torch.testing.assert_close(e.inner.module.w.detach(), w)


def test_nan_stops_the_run():
    class Exploding(Inner):
        def training_step(self, batch):
            return super().training_step(batch) * float("nan") if self.count >= 2 else \
                super().training_step(batch)
    e = program(inner_cls=Exploding)
    with pytest.raises(FloatingPointError, match="non-finite values in: loss"):
        e.run()


# -- refusals ------------------------------------------------------------------------------------
def refuses(match, exc=ValueError, **kw):
    with pytest.raises(exc, match=match):
        program(**kw)


def test_misnamed_and_unsupported_hooks():
    class Typo(Outer):
        def param_callbak(self):
            pass
    refuses("Did you mean `param_callback`", outer_cls=Typo)

    class Grad(Outer):
        def grad_callback(self):
            pass
    refuses("defines `grad_callback`, a Betty hook the front end does not call", outer_cls=Grad)

    class Engine2(Engine):
        def validaton(self):
            return {}
    refuses("Did you mean `validation`", engine_cls=Engine2)

    class NoLoss(ImplicitProblem):
        pass
    refuses("does not define training_step", outer_cls=NoLoss)


def test_refused_methods_and_orders():
    refuses("asks to differentiate through its lowers' updates",
            outer_config=Config(first_order=False))
    with pytest.raises(ValueError, match="`warmup_steps` > 0 is not supported"):
        Config(warmup_steps=3)


def test_refused_optimizer_and_scheduler():
    m = Vec()
    with pytest.raises(TypeError, match="RMSprop"):
        e = program()
        from betty_func.betty import _build
        e.inner._optimizer = torch.optim.RMSprop(m.parameters())
        _build.optimizer_for(e.inner, dict(m.named_parameters()))


def test_refused_wiring():
    i = Inner("inner", module=Vec(), optimizer=torch.optim.SGD(Vec().parameters(), lr=0.1),
              train_data_loader=[(torch.zeros(1),)])
    o = Outer("outer", module=Vec(), optimizer=torch.optim.SGD(Vec().parameters(), lr=0.1),
              train_data_loader=[(torch.zeros(1),)])
    with pytest.raises(ValueError, match="keys 'u2l' and 'l2u'"):
        Engine(problems=[i, o], dependencies={"u2l": {o: [i]}})
    other = Outer("other", module=Vec(), optimizer=torch.optim.SGD(Vec().parameters(), lr=0.1),
                  train_data_loader=[(torch.zeros(1),)])
    with pytest.raises(ValueError, match="names a problem not in `problems`"):
        Engine(problems=[i, o], dependencies={"u2l": {other: [i]}, "l2u": {}})
    with pytest.raises(ValueError, match="is an attribute of every problem"):
        Inner("module", module=Vec(), optimizer=None)
    with pytest.raises(TypeError, match="must be a betty.configs.Config"):
        Inner("inner", config={"type": "cg"})


def test_component_given_twice_is_refused():
    class Both(Inner):
        def configure_module(self):
            return Vec()
    refuses("is given its module and also defines configure_module", inner_cls=Both)


def test_configure_hooks_build_the_problem():
    class Configured(ImplicitProblem):
        def configure_module(self):
            return Vec()

        def configure_optimizer(self):
            return torch.optim.SGD(self.module.parameters(), lr=0.1)

        def configure_scheduler(self):
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)

        def configure_train_data_loader(self):
            return [(torch.zeros(1),)]

        def training_step(self, batch):
            return 0.5 * ((self.module.w - 3.0) ** 2).sum()
    p = Configured("single", config=Config())
    e = Engine(problems=[p], config=EngineConfig(train_iters=4),
               dependencies={"u2l": {}, "l2u": {}})
    e.run()
    # four SGD steps toward 3 with rates 0.1, 0.1, 0.05, 0.05: w = 3 (1 - Π(1 - r))
    expected = 3.0 * (1 - 0.9 * 0.9 * 0.95 * 0.95)
    torch.testing.assert_close(p.module.w.detach(), torch.full((3,), expected,
                                                               dtype=torch.float64))
    assert p.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_bad_metric_and_misspelt_problem():
    class BadMetric(Outer):
        def training_step(self, batch):
            return {"loss": super().training_step(batch), "vec": torch.ones(3)}
    e = program(outer_cls=BadMetric)
    with pytest.raises(TypeError, match="metric 'vec' must be a number"):
        e.run()

    class Misspelt(Outer):
        def training_step(self, batch):
            return F.mse_loss(self.inenr.module.w, torch.ones(3, dtype=torch.float64))
    e = program(outer_cls=Misspelt)
    with pytest.raises(Exception, match="has no attribute 'inenr'"):
        e.run()


def test_iterative_lower_is_differentiated_through_its_updates():
    """An IterativeProblem lower (restarted at 0 by on_inner_loop_start, as Betty's logreg
    example): the upper's step equals reverse mode through the K SGD steps, by plain autograd."""
    from betty_func.betty.problems import IterativeProblem

    class Unrolled(IterativeProblem):
        training_step = Inner.training_step

        def on_inner_loop_start(self):
            self.module.w.data.zero_()
    K = 3
    e = program(inner_cls=Unrolled, inner_config=Config(unroll_steps=K), lr=0.3, outer_lr=1.0,
                engine_config=EngineConfig(train_iters=K))
    lam0 = e.outer.module.w.detach().clone()
    e.run()
    lam = lam0.clone().requires_grad_(True)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for _ in range(K):
        L = 0.5 * ((w - lam) ** 2).sum() + 0.5 * (w ** 2).sum()
        w = w - 0.3 * torch.autograd.grad(L, w, create_graph=True)[0]
    (g,) = torch.autograd.grad(0.5 * ((w - 1.0) ** 2).sum(), lam)
    torch.testing.assert_close(lam0 - e.outer.module.w.detach(), g, rtol=1e-12, atol=1e-14)
    assert e.inner.count == K and e.outer.count == 1


def test_iterative_lower_refuses_param_callback():
    from betty_func.betty.problems import IterativeProblem

    class Projected(IterativeProblem):
        training_step = Inner.training_step

        def param_callback(self):
            pass
    refuses("cannot take param_callback or gradient_accumulation", inner_cls=Projected)


def test_graph_bookkeeping():
    e = program()
    assert e.outer.children == [e.inner] and e.inner.parents == [e.outer]
    assert e.inner.leaf and not e.outer.leaf
    assert e.outer.paths == [[e.outer, e.inner, e.outer]] and e.inner.paths == []


def test_neumann_as_configured_and_its_divergence_refused():
    """Config(type='neumann') is hypergrad.neumann(neumann_iterations, neumann_alpha): the
    upper's first SGD step (lr 1) equals the series by hand; Betty's default α = 1 diverges on
    this lower (Hessian 2I: |1 - 2α| = 1) and is refused at the first step."""
    e = program(inner_config=Config(type="neumann", neumann_iterations=5, neumann_alpha=0.3),
                outer_lr=1.0, engine_config=EngineConfig(train_iters=1))
    lam = e.outer.module.w.detach().clone()
    e.run()
    w = 0.1 * lam                        # one SGD step (lr 0.1) of the lower from 0: ∇L(0) = -λ
    v = w - 1.0                          # ∂F/∂w; ∂²L/∂λ∂w = -I, so the hypergradient is p:
    p = 0.3 * sum((1 - 0.3 * 2) ** k for k in range(6)) * v   # α Σ_{k≤K} (I - αH)^k v, H = 2I
    torch.testing.assert_close(lam - e.outer.module.w.detach(), p, rtol=1e-12, atol=1e-15)
    e = program(inner_config=Config(type="neumann"), engine_config=EngineConfig(train_iters=1))
    with pytest.raises(ValueError, match="diverges"):
        e.run()


def test_rate_set_by_hand_is_refused():
    e = program(engine_config=EngineConfig(train_iters=2))
    e.run()
    e.inner.optimizer.param_groups[0]["lr"] = 0.5
    with pytest.raises(ValueError, match="its learning rate was changed .by hand in param_groups"):
        e.train_step()


def test_roll_back_is_darts_second_order_step():
    """roll_back=True, unroll_steps=1: the lower's step serves the upper's hypergradient only;
    then it restarts from θ_t and steps with the new λ (by hand on the quadratic, where cg is
    exact: hypergradient (θ' - 1) / 2)."""
    e = program(engine_config=EngineConfig(train_iters=3, roll_back=True), outer_lr=0.5)
    e.run()
    th, lam = torch.zeros(3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    for _ in range(3):
        virtual = th - 0.1 * (2 * th - lam)
        lam = lam - 0.5 * (virtual - 1.0) / 2
        th = th - 0.1 * (2 * th - lam)
    torch.testing.assert_close(e.outer.module.w.detach(), lam, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(e.inner.module.w.detach(), th, rtol=1e-12, atol=1e-15)
    assert e.inner.count == 3


def test_roll_back_refusals():
    from betty_func.betty.problems import IterativeProblem

    class Unrolled(IterativeProblem):
        training_step = Inner.training_step
    refuses("roll_back=True on 'inner' is not supported: it is an IterativeProblem",
            inner_cls=Unrolled, engine_config=EngineConfig(roll_back=True))
    refuses("it accumulates gradients", engine_config=EngineConfig(roll_back=True),
            inner_config=Config(type="cg", gradient_accumulation=2))


def test_wandb_logger_without_wandb_is_an_error(monkeypatch):
    import importlib.util
    find = importlib.util.find_spec  # as on a machine without it, wherever this runs
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else find(name, *a))
    refuses("needs the wandb package, which is not installed", exc=ModuleNotFoundError,
            engine_config=EngineConfig(logger_type="wandb"))


def test_sama_lower_equals_the_mlo_program():
    """Config(type='sama') on an Adam lower is hypergrad.sama(eps=sama_adam_alpha) with the
    lower's own optimizer state after its update (the mlo program by hand)."""
    from betty_func import hypergrad as hg, optim as boptim
    e = program(inner_config=Config(type="sama", sama_adam_alpha=0.5), outer_lr=1.0,
                inner_optimizer=lambda ps: torch.optim.Adam(ps, lr=0.05),
                engine_config=EngineConfig(train_iters=3))
    e.run()
    ref = mlo_twin(boptim.adam(0.05), hg.sama(eps=0.5), steps=3, outer_lr=1.0)
    assert (ref["outer"] - 0.5).abs().max() > 1e-3
    torch.testing.assert_close(e.outer.module.w.detach(), ref["outer"], rtol=1e-12, atol=1e-15)


def test_reinforce_is_the_zero_order_method_on_the_lowers_window():
    """Config(type='reinforce') (Betty's stub) is hypergrad.zero_order(): the lower runs its
    unroll_steps updates as a window; with the RNG seeded alike, the upper's step equals the mlo
    program's."""
    from betty_func import hypergrad as hg, optim as boptim
    e = program(inner_config=Config(type="reinforce", unroll_steps=2), outer_lr=1.0,
                engine_config=EngineConfig(train_iters=4))
    assert any(isinstance(p.hypergrad, hg.ZeroOrder) for p in e._mlo)
    torch.manual_seed(7)
    e.run()
    torch.manual_seed(7)
    ref = mlo_twin(boptim.sgd(0.1), hg.zero_order(), steps=4, outer_lr=1.0, unroll_steps=2)
    assert (ref["outer"] - 0.5).abs().max() > 1e-3
    torch.testing.assert_close(e.outer.module.w.detach(), ref["outer"], rtol=1e-12, atol=1e-15)
