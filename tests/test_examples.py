"""Smoke tests: each example runs end to end in --quick mode and writes its JSON table, starts
with its header line (device, threads, torch), draws its --plot, and refuses --device cuda where
there is no GPU."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _idx import write_idx
from betty_func.data import long_tailed_counts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("architecture_search.py", "betty_quickstart.py", "data_reweighting.py",
            "hpo_logreg.py", "hpo_weight_decay.py", "maml.py", "three_level.py")
HEADER = re.compile(rf"# device cpu, (\d+) threads?, torch {re.escape(torch.__version__)}")


def check_header(stdout: str, threads: int | None = None) -> str:
    """The run's first line states the machine setting, and comes again above the table."""
    header = stdout.splitlines()[0]
    match = HEADER.fullmatch(header)
    assert match, header
    assert threads is None or int(match.group(1)) == threads, header
    assert stdout.count(header + "\n") == 2, stdout[-2000:]
    return header


def check_plot(png: Path) -> None:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png


def run_quick(script: str, tmp_path: Path, *extra: str, plot: bool = False) -> tuple[dict, str]:
    """Run ``examples/<script> --quick --json ...`` (and ``--plot``); check its header line and
    its figure; return its results table and stdout."""
    out, png = tmp_path / "result.json", tmp_path / "plots" / "x.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick",
                           "--json", str(out), *extra, *(("--plot", str(png)) if plot else ())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["machine"] == check_header(proc.stdout)
    if plot:
        check_plot(png)
    return res["results"], proc.stdout


def test_hpo_logreg_quick(tmp_path):
    table, stdout = run_quick("hpo_logreg.py", tmp_path, "--threads", "1", plot=True)
    check_header(stdout, threads=1)
    assert set(table) == {"grid-searched single decay", "learned single decay",
                          "learned per-pixel decay"}
    for rows in table.values():
        assert all(0.5 < r["test_acc"] <= 1.0 for r in rows)
    assert "| learned per-pixel decay |" in stdout


def test_data_reweighting_quick(tmp_path):
    table, stdout = run_quick("data_reweighting.py", tmp_path, "--logdir", str(tmp_path / "tb"),
                              plot=True)
    assert set(table) == {"baseline", "class-balanced", "darts", "cg", "neumann", "darts-size"}
    assert all(0.0 < r["test_acc"] <= 1.0 for rows in table.values() for r in rows)
    assert any((tmp_path / "tb").iterdir())  # TensorBoard logs were written
    # the README's paired-gain column: per seed, the row's accuracy minus the baseline's
    assert ("| method | test acc (%) | paired gain over baseline, seeds 0 (points) | s / run |"
            in stdout)
    assert re.search(r"^\| baseline \| [\d.]+ ± [\d.]+ \| – \|", stdout, re.M)
    for m in set(table) - {"baseline"}:
        gain = 100 * (table[m][0]["test_acc"] - table["baseline"][0]["test_acc"])
        assert f"| {m} | " in stdout and f"| {gain:+.2f} (mean {gain:+.2f} ± 0.00) |" in stdout
    for m in ("darts", "cg", "neumann", "darts-size"):  # the plot's learned weight per class
        row = table[m][0]
        assert len(row["class_weight"]) == 10 and all(0 < w < 1 for w in row["class_weight"])
        assert sorted(row["class_counts"]) == sorted(table["darts"][0]["class_counts"])


def test_data_reweighting_reads_full_mnist_from_disk(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", 600), ("t10k", 30)):
        write_idx(raw / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(raw / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10, gz=True)
    table, stdout = run_quick("data_reweighting.py", tmp_path, "--logdir", "", "--methods",
                              "baseline", "cg", "--mnist-root", str(tmp_path))
    assert set(table) == {"baseline", "cg"}
    train = sum(long_tailed_counts(50, 100.0, 10, seed=0))  # 60 per class, 10 held for meta
    assert f"long-tailed MNIST (full, imbalance 100, train {train})" in stdout
    # test accuracy is over the 30 test digits: a multiple of 1/30
    acc = table["cg"][0]["test_acc"]
    assert abs(acc * 30 - round(acc * 30)) < 1e-4
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "data_reweighting.py"),
                           "--quick", "--mnist-root", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "nowhere" in proc.stderr and "no file at" in proc.stderr


def test_data_reweighting_under_torchrun_on_two_processes(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           str(ROOT / "examples" / "data_reweighting.py"), "--quick", "--methods",
                           "cg", "--logdir", str(tmp_path / "tb"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and 0.0 < res["results"]["cg"][0]["test_acc"] <= 1.0
    assert proc.stdout.count("| cg |") == 1  # rank 0 alone prints
    assert len(list((tmp_path / "tb").iterdir())) == 1  # and writes TensorBoard logs


def test_hpo_weight_decay_quick(tmp_path):
    table, _ = run_quick("hpo_weight_decay.py", tmp_path, "--logdir", "", plot=True)
    rows = table["learned per-parameter decay (cg)"]
    assert rows[0]["decay_min"] >= 0.0  # projected onto decay >= 0
    assert rows[0]["decay_max"] - rows[0]["decay_min"] > 1e-4  # and they moved from 5e-4


def test_hpo_weight_decay_vmapped_seeds_equal_sequential_runs(tmp_path):
    """--vmap runs both seeds as one batch of programs (torch.vmap(mlo.step)): same numbers."""
    seq, _ = run_quick("hpo_weight_decay.py", tmp_path, "--logdir", "", "--seeds", "0", "1")
    vec, _ = run_quick("hpo_weight_decay.py", tmp_path, "--logdir", "", "--seeds", "0", "1",
                       "--vmap")
    for name in seq:
        for a, b in zip(seq[name], vec[name]):
            assert (a["seed"] == b["seed"]
                    and a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-3))
            if "decay_mean" in a:
                assert a["decay_mean"] == pytest.approx(b["decay_mean"], rel=1e-4)


def test_maml_quick(tmp_path):
    rows, _ = run_quick("maml.py", tmp_path, "--logdir", "", plot=True)
    assert {r["method"] for r in rows} == {"maml", "fomaml", "imaml"}
    assert all(0.0 < r["acc"] <= 1.0 and r["ci95"] > 0 for r in rows)
    for r in rows:  # the plotted curve: accuracy after 0..K inner steps, K = 5
        assert len(r["acc_by_step"]) == 6 and r["acc_by_step"][-1] == r["acc"]
        assert r["acc_by_step_at_init"][-1] == r["acc_at_init"]


def test_three_level_quick(tmp_path):
    table, stdout = run_quick("three_level.py", tmp_path, "--logdir", "", plot=True)
    assert set(table) == {"classifier", "decay>classifier", "weights>classifier",
                          "(weights, decay)>classifier", "weights>decay>classifier"}
    assert table["classifier"][0]["decay"] == pytest.approx(5e-4)
    top = table["weights>decay>classifier"][0]
    assert top["decay"] != pytest.approx(5e-4, rel=1e-3)  # the middle level moved
    assert 0.0 < top["weight_clean"] < 1.0 and 0.0 < top["weight_noisy"] < 1.0
    assert "| weights>decay>classifier |" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="--device cuda is refused only without CUDA")
@pytest.mark.parametrize("script", EXAMPLES)
def test_examples_refuse_cuda_without_a_gpu_and_plot_without_matplotlib(script, tmp_path,
                                                                        monkeypatch, capsys):
    """Up front, before any work: argparse's exit code 2 and the project's message layout
    (each example's main() in this process: a subprocess would spend seconds importing torch)."""
    main = _example(script.removesuffix(".py")).main
    for argv, message in (
            (["--device", "cuda"], f"{script}(--device): CUDA is not available to this torch "
             f"(torch.cuda.is_available() is False). Got --device cuda, torch "
             f"{torch.__version__}. Pass --device cpu"),
            (["--plot", str(tmp_path / "x.png")], f"{script}(--plot): the plot needs matplotlib, "
             "which is not installed. Got --plot"),
            (["--threads", "0"], f"{script}(--threads): the thread count must be at least 1. "
             "Got 0.")):
        monkeypatch.setattr(sys, "argv", [script, *argv])
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
            with pytest.raises(SystemExit) as exit_:
                main()
        out, err = capsys.readouterr()
        assert exit_.value.code == 2 and out == "", (argv, out, err)  # before the header
        assert message in " ".join(err.split()), (argv, err)
    assert not (tmp_path / "x.png").exists()


def test_bundled_data_and_missing_path(tmp_path):
    from betty_func.data import mnist10k
    X, y = mnist10k()
    assert X.shape == (10000, 784) and float(X.max()) == 1.0 and int(y.bincount()[5]) == 863
    with pytest.raises(FileNotFoundError,
                       match=r"data\.mnist10k\(path\): no file at '.*nope\.npz'"):
        mnist10k(tmp_path / "nope.npz")


def _example(name: str):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_data_reweighting_shift_moves_each_digit_within_the_bound():
    shifted = _example("data_reweighting").shifted
    img = torch.zeros(3, 28, 28)
    img[:, 10:14, 12:15] = torch.arange(1.0, 13.0).reshape(4, 3)  # a patch well inside the frame
    batch = [(x.reshape(-1), torch.tensor(i)) for i, x in enumerate(img)]
    torch.manual_seed(0)
    X, y = shifted(2)(batch)
    assert X.shape == (3, 784) and y.tolist() == [0, 1, 2]
    for before, after in zip(img, X.reshape(3, 28, 28)):
        moved = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(torch.roll(before, (dy, dx), (0, 1)), after)]
        assert len(moved) == 1  # a pure translation by at most 2 px
    X0, _ = shifted(0)(batch)
    assert torch.equal(X0, img.reshape(3, -1))


def test_data_reweighting_net_reads_the_loss_or_the_class_size():
    net_input = _example("data_reweighting").net_input
    losses = torch.tensor([0.5, 2.0, 0.1], requires_grad=True)
    labels, counts = torch.tensor([2, 0, 2]), torch.tensor([100.0, 30.0, 1000.0])
    by_loss = net_input("cg", losses, labels, counts)
    assert by_loss.shape == (3, 1) and not by_loss.requires_grad  # ℓ_i detached: w is a weight
    torch.testing.assert_close(by_loss[:, 0], losses.detach())
    torch.testing.assert_close(net_input("darts-size", losses, labels, counts)[:, 0],
                               torch.tensor([3.0, 2.0, 3.0]))  # log10 of its class's size


def test_maml_rotations_are_classes_of_their_own():
    rotated = _example("maml").rotated
    X = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 784)
    y = torch.tensor([3, 7])
    Xr, yr = rotated(X, y, range(5), 4)  # digit 7 is not among 0-4
    assert yr.tolist() == [12, 13, 14, 15]
    assert torch.equal(Xr[0], X[0])
    assert torch.equal(Xr[2].reshape(28, 28), X[0].reshape(28, 28).flip(0, 1))  # turned 180°


def test_data_reweighting_standardize_feeds_the_tutorials_transform(tmp_path):
    standardized = _example("data_reweighting").standardized
    f = lambda params, X: params * X  # noqa: E731
    X = torch.rand(4, 784)
    assert standardized(f, False) is f
    torch.testing.assert_close(standardized(f, True)(2.0, X), 2.0 * (X - 0.1307) / 0.3081)
    # the tutorial's recipe end to end: standardized inputs, no weight decay, mean(w * loss),
    # reweighting Adam 1e-5, rate drops at 1/2 and 5/6
    recipe = ["--standardize", "--weight-decay", "0", "--no-normalize", "--meta-lr", "1e-5",
              "--lr-drops", "0.5", "0.8333"]
    table, _ = run_quick("data_reweighting.py", tmp_path, "--logdir", "", "--methods", "baseline",
                         "darts", *recipe)
    args = json.loads((tmp_path / "result.json").read_text())["args"]
    assert args["standardize"] and not args["normalize"] and args["lr_drops"] == [0.5, 0.8333]
    assert all(0.0 < r["test_acc"] <= 1.0 for rows in table.values() for r in rows)


def test_betty_quickstart_equals_data_reweighting(tmp_path):
    """The quick start written for Betty, run on the front end, is the same computation as
    data_reweighting.py's darts row with the plain mean: the same accuracy, to the digit."""
    acc, png = {}, tmp_path / "quickstart.png"
    for script, extra in (("betty_quickstart.py", ("--plot", str(png))),
                          ("data_reweighting.py", ("--logdir", "", "--methods", "darts",
                                                   "--no-normalize"))):
        out = tmp_path / f"{script}.json"
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--seeds", "0",
                               "--steps", "30", "--json", str(out), *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        check_header(proc.stdout)
        acc[script] = json.loads(out.read_text())["results"]["darts"][0]["test_acc"]
    assert acc["betty_quickstart.py"] == acc["data_reweighting.py"] > 0.2  # trained (chance 0.1)
    check_plot(png)
