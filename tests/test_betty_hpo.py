"""Betty's HPO tutorial (seed 002) run with only the import changed, checked against the same
bilevel program written with ``mlo`` directly (float64: equal to 1e-6 relative).

The tutorial's code as printed does not run on Betty either; the typos a user must fix are fixed
here: ``x.view(-2, 784)`` (``-1``), ``fc0_wdecay, fc2_wdecay = self.hpo()`` then
``fc1_wdecay`` (unpacked as ``fc1_wdecay, fc2_wdecay``), and ``self.classifier.module.fc2`` (the
net's layers are ``fc0`` and ``fc1``). ``device="cuda"`` is ``device="cpu"`` (CI has no GPU; the
CUDA case is tested for its error). Sizes are small: 256 digits, batches of 32, 6 global steps.
The tutorial's upper (Adam at 1e-5) is checked, and an SGD upper, whose step shows the
hypergradient's size as well as its sign.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from betty_func import hypergrad as hg, mlo
from betty_func import optim as boptim
from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.engine import Engine
from betty_func.betty.problems import ImplicitProblem
from betty_func.data import mnist10k

STEPS = 6


def digits(n=256):
    X, y = mnist10k(dtype=torch.float64)
    return TensorDataset(X[:n], y[:n])


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.fc0 = nn.Linear(784, 200, bias=False)
        self.fc1 = nn.Linear(200, 10, bias=False)

    def forward(self, x):
        x = x.view(-1, 784)
        x = self.fc0(x)
        x = F.relu(x)
        x = self.fc1(x)
        out = F.log_softmax(x, dim=0)
        return out


class WeightDecay(nn.Module):
    def __init__(self):
        super(WeightDecay, self).__init__()
        self.fc1_wdecay = nn.Parameter(torch.ones(200, 784) * 5e-4)
        self.fc2_wdecay = nn.Parameter(torch.ones(10, 200) * 5e-4)

    def forward(self):
        return self.fc1_wdecay, self.fc2_wdecay


class Classifier(ImplicitProblem):
    def forward(self, x):
        return self.module(x)

    def training_step(self, batch):
        x, target = batch
        out = self.module(x)
        ce_loss = F.cross_entropy(out, target)
        fc1_wdecay, fc2_wdecay = self.hpo()
        reg_loss = torch.sum(torch.pow(self.module.fc0.weight, 2) * fc1_wdecay) / 2 + \
            torch.sum(torch.pow(self.module.fc1.weight, 2) * fc2_wdecay) / 2
        return ce_loss + reg_loss


class HPO(ImplicitProblem):
    def forward(self):
        return self.module()

    def training_step(self, batch):
        x, target = batch
        out = self.classifier(x)
        loss = F.cross_entropy(out, target)
        fc1_wdecay, fc2_wdecay = self()
        reg_loss = torch.sum(torch.pow(self.classifier.module.fc0.weight, 2) * fc1_wdecay) / 2 + \
            torch.sum(torch.pow(self.classifier.module.fc1.weight, 2) * fc2_wdecay) / 2
        acc = (out.argmax(dim=1) == target.long()).float().mean().item() * 100
        loss = loss + reg_loss
        return {'loss': loss, 'acc': acc}

    def param_callback(self, params):
        for p in params:
            p.data.clamp_(min=1e-8)


def loaders():
    data = digits()
    return tuple(DataLoader(data, batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(k)) for k in (1, 2))


def run_betty(hpo_optimizer="adam", valid_step=3):
    torch.manual_seed(0)
    classifier_module, hpo_module = Net().double(), WeightDecay().double()
    classifier_optimizer = optim.SGD(classifier_module.parameters(), lr=0.01, momentum=0.9)
    hpo_optimizer = (optim.Adam(hpo_module.parameters(), lr=1e-5) if hpo_optimizer == "adam"
                     else optim.SGD(hpo_module.parameters(), lr=0.01))
    classifier_data_loader, hpo_data_loader = loaders()
    classifier = Classifier(name='classifier', module=classifier_module,
                            optimizer=classifier_optimizer,
                            train_data_loader=classifier_data_loader, config=Config(),
                            device="cpu")
    hpo_config = Config(type='darts', step=1, log_step=10, retain_graph=True)
    hpo = HPO(name='hpo', module=hpo_module, optimizer=hpo_optimizer,
              train_data_loader=hpo_data_loader, config=hpo_config, device="cpu")
    u2l = {hpo: [classifier]}
    l2u = {classifier: [hpo]}
    dependencies = {'l2u': l2u, 'u2l': u2l}
    seen = []
    _, test = loaders()

    class HPOEngine(Engine):
        @torch.no_grad()
        def validation(self):
            correct = total = 0
            for x, target in test:
                out = self.classifier(x)
                correct += (out.argmax(dim=1) == target).sum().item()
                total += x.size(0)
            seen.append(self.global_step)
            return {'acc': correct / total * 100}

    engine_config = EngineConfig(train_iters=STEPS, valid_step=valid_step)
    engine = HPOEngine(config=engine_config, problems=[hpo, classifier],
                       dependencies=dependencies)
    engine.run()
    return engine, seen


def run_mlo(hpo_optimizer="adam"):
    """The same program written functionally."""
    torch.manual_seed(0)
    net, wd = Net().double(), WeightDecay().double()
    theta = {k: v.detach().clone() for k, v in net.named_parameters()}
    lam = {k: v.detach().clone() for k, v in wd.named_parameters()}

    def reg(th, la):
        return (th["fc0.weight"] ** 2 * la["fc1_wdecay"]).sum() / 2 + \
            (th["fc1.weight"] ** 2 * la["fc2_wdecay"]).sum() / 2

    def classifier_loss(th, batch, *, hpo):
        x, t = batch
        return F.cross_entropy(functional_call(net, th, (x,)), t) + reg(th, hpo)

    def hpo_loss(la, batch, *, classifier):
        x, t = batch
        return F.cross_entropy(functional_call(net, classifier, (x,)), t) + reg(classifier, la)

    cl, hl = loaders()
    opt = boptim.adam(1e-5) if hpo_optimizer == "adam" else boptim.sgd(0.01)
    problems = [mlo.Problem("classifier", classifier_loss, theta, boptim.sgd(0.01, momentum=0.9),
                            data=cl, hypergrad=hg.darts(eps=0.01)),
                mlo.Problem("hpo", hpo_loss, lam, opt, data=hl,
                            project=lambda la: {k: v.clamp(min=1e-8) for k, v in la.items()})]
    return mlo.solve(problems, {"hpo": ["classifier"]}, steps=STEPS,
                     logging=mlo.Logging(progress=False, console=False))


@pytest.mark.parametrize("upper", ["adam", "sgd"])
def test_hpo_tutorial_equals_the_mlo_program(upper, capsys):
    engine, seen = run_betty(upper)
    ref = run_mlo(upper)
    start = 5e-4
    for k in ("fc1_wdecay", "fc2_wdecay"):
        ours = getattr(engine.hpo.module, k).detach()
        moved = ref.params["hpo"][k] - start
        assert moved.abs().max() > 1e-7  # the decays did move
        torch.testing.assert_close(ours - start, moved, rtol=1e-6, atol=1e-12)
    for k, v in engine.classifier.module.named_parameters():
        torch.testing.assert_close(v.detach(), ref.params["classifier"][k], rtol=1e-6, atol=1e-12)
    assert seen == [3, 6]  # validation every valid_step global steps
    assert engine.classifier.count == STEPS and engine.hpo.count == STEPS
    out = capsys.readouterr().out
    assert "[Validation] [Global Step 3]" in out and "validation/acc" in out
