"""Betty's quick start (seed 000, Meta-Weight-Net) with only the import changed, on long-tailed
bundled digits, checked against the same program written with ``mlo`` (float64, 1e-6).

As a Betty user writes it: an ``ImplicitProblem`` per level, ``self.forward`` and
``self.reweight(...)`` in the classifier's loss, ``self.classifier(x)`` in the reweighting
loss (with its ``print``), SGD + momentum + weight decay + MultiStepLR on the classifier, Adam
on the reweighting net, ``Config(type='darts')`` set on the *upper* as the seed does (the method
is read from the lower, whose default is darts). The seed's ResNet32 / CIFAR loaders are an MLP
and digit loaders here (the user supplies both); ``device="cuda"`` is ``"cpu"``.
"""
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
from betty_func.data import long_tailed_splits, mnist10k

STEPS = 5


class MLP(nn.Module):
    def __init__(self, hidden_size=100):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(1, hidden_size)
        self.fc2 = nn.Linear(hidden_size, 1)

    def forward(self, x):
        x = self.fc2(F.relu(self.fc1(x)))
        weight = torch.sigmoid(x)
        return weight


class Classifier(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        outputs = self.forward(inputs)
        loss_vector = F.cross_entropy(outputs, labels.long(), reduction="none")
        loss_vector_reshape = torch.reshape(loss_vector, (-1, 1))
        weight = self.reweight(loss_vector_reshape.detach())
        loss = torch.mean(weight * loss_vector_reshape)
        return loss


class Reweight(ImplicitProblem):
    def training_step(self, batch):
        inputs, labels = batch
        outputs = self.classifier(inputs)
        loss = F.cross_entropy(outputs, labels.long())
        print('Reweight Loss:', loss.item())
        return loss


def build_dataloader():
    s = long_tailed_splits(*mnist10k(dtype=torch.float64), imbalance=50, meta_per_class=5,
                           test_per_class=0, seed=0, n_max=40)
    return (DataLoader(TensorDataset(*s.train), batch_size=25, shuffle=True,
                       generator=torch.Generator().manual_seed(1)),
            DataLoader(TensorDataset(*s.meta), batch_size=25, shuffle=True,
                       generator=torch.Generator().manual_seed(2)))


def modules():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    return net, MLP(hidden_size=100).double()


def run_betty():
    classifier_module, reweight_module = modules()
    classifier_optimizer = optim.SGD(classifier_module.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=5e-4)
    classifier_dataloader, reweight_dataloader = build_dataloader()
    classifier_scheduler = optim.lr_scheduler.MultiStepLR(classifier_optimizer,
                                                          milestones=[2, 4], gamma=0.1)
    classifier = Classifier(name='classifier', module=classifier_module,
                            optimizer=classifier_optimizer, scheduler=classifier_scheduler,
                            train_data_loader=classifier_dataloader, config=Config(),
                            device="cpu")
    reweight_optimizer = optim.Adam(reweight_module.parameters(), lr=1e-3)
    reweight = Reweight(name='reweight', module=reweight_module, optimizer=reweight_optimizer,
                        train_data_loader=reweight_dataloader, config=Config(type='darts'),
                        device="cpu")
    u2l = {reweight: [classifier]}
    l2u = {classifier: [reweight]}
    dependencies = {'l2u': l2u, 'u2l': u2l}
    problems = [reweight, classifier]
    engine_config = EngineConfig(train_iters=STEPS)
    engine = Engine(config=engine_config, problems=problems, dependencies=dependencies)
    engine.run()
    return engine


def run_mlo():
    net, rw = modules()
    theta = {k: v.detach().clone() for k, v in net.named_parameters()}
    phi = {k: v.detach().clone() for k, v in rw.named_parameters()}

    def classifier_loss(th, batch, *, reweight):
        x, y = batch
        losses = F.cross_entropy(functional_call(net, th, (x,)), y, reduction="none")[:, None]
        return (functional_call(rw, reweight, (losses.detach(),)) * losses).mean()

    def reweight_loss(ph, batch, *, classifier):
        x, y = batch
        return F.cross_entropy(functional_call(net, classifier, (x,)), y)

    train, meta = build_dataloader()
    sgd = boptim.sgd(boptim.multistep(0.1, [2, 4], 0.1), momentum=0.9, weight_decay=5e-4)
    problems = [mlo.Problem("classifier", classifier_loss, theta, sgd, data=train,
                            hypergrad=hg.darts(eps=0.01)),
                mlo.Problem("reweight", reweight_loss, phi, boptim.adam(1e-3), data=meta)]
    return mlo.solve(problems, {"reweight": ["classifier"]}, steps=STEPS,
                     logging=mlo.Logging(progress=False, console=False))


def test_quickstart_equals_the_mlo_program(capsys):
    engine = run_betty()
    ref = run_mlo()
    for name in ("classifier", "reweight"):
        start = dict(modules()[0 if name == "classifier" else 1].named_parameters())
        for k, v in getattr(engine, name).module.named_parameters():
            moved = ref.params[name][k] - start[k].detach()
            assert moved.abs().max() > 1e-6
            torch.testing.assert_close(v.detach() - start[k].detach(), moved, rtol=1e-6,
                                       atol=1e-12)
    # the scheduler's rate after the run: MultiStepLR dropped twice by step 5
    assert abs(engine.classifier.optimizer.param_groups[0]["lr"] - 1e-3) < 1e-12
    assert "Reweight Loss:" in capsys.readouterr().out
