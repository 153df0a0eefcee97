"""The README seed (004): ``from betty import Engine`` (which no Betty release had: here
``from betty_func.betty import Engine`` works), ``Config(type='darts', step=1, log_step=10,
fp16=False, retain_graph=True)``, a classifier returning ``{'loss', 'acc'}`` and reading a
scalar weight decay ``self.hpo()``; the HPO problem's loss (``...`` in the seed) is the
classifier's loss on held-out digits. Checked against the same program with ``mlo``."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from betty_func import hypergrad as hg, mlo, optim as boptim
from betty_func.betty import Engine
from betty_func.betty.configs import Config, EngineConfig
from betty_func.betty.problems import ImplicitProblem
from betty_func.data import mnist10k

STEPS = 4


class Decay(nn.Module):
    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(1e-3, dtype=torch.float64))

    def forward(self):
        return self.value


class Classifier(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        outputs = self.module(inputs)
        loss = F.cross_entropy(outputs, labels)
        acc = (outputs.argmax(dim=1) == labels.long()).float().mean().item() * 100
        weight_decay = self.hpo()
        reg_loss = weight_decay * sum([p.norm().pow(2) for p in self.module.parameters()])
        return {'loss': loss + reg_loss, 'acc': acc}


class HPO(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        return F.cross_entropy(self.classifier(inputs), labels)


def setup():
    torch.manual_seed(0)
    X, y = mnist10k(dtype=torch.float64)
    net = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).double()
    train = DataLoader(TensorDataset(X[:128], y[:128]), batch_size=32)
    held = DataLoader(TensorDataset(X[128:256], y[128:256]), batch_size=32)
    return net, Decay(), train, held


def test_readme_seed_program(capsys):
    cls_module, hpo_module, cls_data_loader, hpo_loader = setup()
    cls_optimizer = torch.optim.SGD(cls_module.parameters(), lr=0.1)
    cls_config = Config(type='darts', step=1, log_step=2, fp16=False, retain_graph=True)
    cls_prob = Classifier(name='classifier', module=cls_module, optimizer=cls_optimizer,
                          train_data_loader=cls_data_loader, config=cls_config)
    hpo_prob = HPO(name='hpo', module=hpo_module,
                   optimizer=torch.optim.SGD(hpo_module.parameters(), lr=0.1),
                   train_data_loader=hpo_loader, config=Config())
    engine = Engine(problems=[hpo_prob, cls_prob], config=EngineConfig(train_iters=STEPS),
                    dependencies={"u2l": {hpo_prob: [cls_prob]}, "l2u": {cls_prob: [hpo_prob]}})
    engine.run()

    net, decay, train, held = setup()

    def cls_loss(th, batch, *, hpo):
        x, t = batch
        reg = hpo["value"] * sum(p.norm().pow(2) for p in th.values())
        return F.cross_entropy(functional_call(net, th, (x,)), t) + reg

    def hpo_loss(la, batch, *, classifier):
        x, t = batch
        return F.cross_entropy(functional_call(net, classifier, (x,)), t)

    theta = {k: v.detach().clone() for k, v in net.named_parameters()}
    ref = mlo.solve([mlo.Problem("classifier", cls_loss, theta, boptim.sgd(0.1), data=train,
                                 hypergrad=hg.darts(eps=0.01)),
                     mlo.Problem("hpo", hpo_loss, {"value": decay.value.detach().clone()},
                                 boptim.sgd(0.1), data=held)],
                    {"hpo": ["classifier"]}, steps=STEPS,
                    logging=mlo.Logging(progress=False, console=False))
    moved = ref.params["hpo"]["value"] - 1e-3
    assert abs(float(moved)) > 1e-8
    torch.testing.assert_close(hpo_prob.module.value.detach() - 1e-3, moved, rtol=1e-6,
                               atol=1e-15)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith('[Problem "cl')]
    assert len(lines) == 2 and "classifier/acc:" in lines[0]
