"""The loggers and callbacks of a run (betty_func.logging): one protocol, called at the moments
it names: values only on log and validation steps, JSON lines a script can read back, W&B's
offline files, a callback called the expected number of times, messages for resume, compile,
early stopping and roll-back, and a progress bar on a pseudo-terminal whose lines never garble."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
import torch

from betty_func import hypergrad as hg, logging, mlo, optim

F64 = torch.float64


class Record(logging.Logger):
    """Every hook call, in order."""

    def __init__(self):
        self.calls = []

    def on_start(self, total, first):
        self.calls.append(("start", total, first))

    def on_step(self, step):
        self.calls.append(("step", step))

    def on_log(self, step, scalars):
        self.calls.append(("log", step, dict(scalars)))

    def on_validation(self, step, metrics):
        self.calls.append(("validation", step, dict(metrics)))

    def on_checkpoint(self, step, path):
        self.calls.append(("checkpoint", step, path))

    def on_message(self, step, text):
        self.calls.append(("message", step, text))

    def on_stop(self, step, reason):
        self.calls.append(("stop", step, reason))

    def close(self):
        self.calls.append(("close",))

    def kinds(self, kind):
        return [c for c in self.calls if c[0] == kind]


def bilevel():
    lo = mlo.Problem("lo", lambda w, b, *, hi: ((w - hi) ** 2).sum(), torch.zeros(2, dtype=F64),
                     optim.sgd(0.3), hypergrad=hg.cg(2))
    hi = mlo.Problem("hi", lambda w, b, *, lo: ((lo - 1.0) ** 2).sum(), torch.zeros(2, dtype=F64),
                     optim.sgd(0.3))
    return [lo, hi], {"hi": ["lo"]}


def quiet(*loggers, every=5):
    return mlo.Logging(every=every, progress=False, console=False, loggers=list(loggers))


def test_hooks_are_called_at_their_moments():
    rec = Record()
    mlo.solve(*bilevel(), steps=12, logging=quiet(rec, every=5),
              validation=mlo.Validation(lambda p: {"gap": float((p["lo"] - 1).abs().sum())}, 4))
    assert rec.calls[0] == ("start", 12, 0) and rec.calls[-1] == ("close",)
    assert [c[1] for c in rec.kinds("step")] == list(range(1, 13))
    assert [c[1] for c in rec.kinds("log")] == [5, 10, 12]  # every 5 and the last step
    assert [c[1] for c in rec.kinds("validation")] == [4, 8, 12]
    assert rec.kinds("stop") == [("stop", 12, "finished")]
    assert set(rec.kinds("log")[0][2]) >= {"lo/loss", "hi/loss", "hi/grad_norm"}


def test_nothing_reaches_loggers_between_log_steps():
    """No value (and so no host read) outside log steps: between them only on_step."""
    rec = Record()
    mlo.solve(*bilevel(), steps=9, logging=quiet(rec, every=3))
    between = [c for c in rec.calls if c[0] not in ("step", "start", "stop", "close")
               and c[1] % 3]
    assert between == []


def test_json_lines_hold_the_run(tmp_path):
    path = tmp_path / "run.jsonl"
    r = mlo.solve(*bilevel(), steps=10, logging=quiet(logging.JSONLines(path), every=5),
                  validation=mlo.Validation(lambda p: {"gap": 0.5}, 10),
                  checkpoint=mlo.Checkpoint(tmp_path / "ckpt", every=10))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["kind"], x["step"]) for x in lines] == [
        ("start", 0), ("log", 5), ("log", 10), ("validation", 10), ("checkpoint", 10),
        ("stop", 10)]
    assert lines[2]["scalars"]["hi/loss"] == r.history["hi/loss"][-1][1]
    assert lines[3]["metrics"] == {"gap": 0.5}
    assert Path(lines[4]["path"]).is_file()


def test_callback_counts_and_refusals():
    counts = {"log": 0, "validation": 0, "checkpoint": 0, "stop": []}
    cb = logging.Callback(on_log=lambda s, x: counts.__setitem__("log", counts["log"] + 1),
                          on_validation=lambda s, m: counts.__setitem__(
                              "validation", counts["validation"] + 1),
                          on_stop=lambda s, why: counts["stop"].append((s, why)))
    mlo.solve(*bilevel(), steps=20, logging=quiet(cb, every=4),
              validation=mlo.Validation(lambda p: {"v": 1.0}, 10))
    assert counts["log"] == 5 and counts["validation"] == 2 and counts["stop"] == [(20, "finished")]
    with pytest.raises(TypeError, match="on_log"):
        logging.Callback(on_log="print")
    with pytest.raises(TypeError, match="loggers"):
        mlo.Logging(loggers=[print])
    with pytest.raises(TypeError, match="loggers"):
        mlo.Logging(loggers=logging.Console())


def test_messages_for_early_stopping_roll_back_resume_and_compile(tmp_path):
    rec = Record()
    worse = iter(range(100))  # 0 is read once before the run (solve checks the metric)
    val = mlo.Validation(lambda p: {"loss": float(next(worse))}, every=2, roll_back=True,
                         early_stopping=mlo.EarlyStopping("loss", patience=2))
    r = mlo.solve(*bilevel(), steps=20, logging=quiet(rec), validation=val)
    texts = [c[2] for c in rec.kinds("message")]
    assert r.step == 6 and rec.kinds("stop") == [("stop", 6, "early_stopping")]
    assert any(re.search(r"early stopping.*loss.*not improved for 2.*best 1 at step 2", t)
               for t in texts), texts
    assert any(re.search(r"rolled back to the params of step 2 \(validation loss 1\)", t)
               for t in texts), texts
    rec = Record()
    mlo.solve(*bilevel(), steps=4, checkpoint=mlo.Checkpoint(tmp_path, every=4), logging=quiet())
    mlo.solve(*bilevel(), steps=6, checkpoint=mlo.Checkpoint(tmp_path, every=4, resume=True),
              logging=quiet(rec), compile={"backend": "aot_eager"})
    texts = [c[2] for c in rec.kinds("message")]
    assert rec.calls[0] == ("start", 6, 4)
    assert any(re.search(r"resumed from step 4", t) for t in texts), texts
    assert any(re.search(r"compiled the step .* in [0-9.]+ s", t) for t in texts), texts


def test_wandb_offline_files(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    w = logging.WandB(mode="offline", dir=str(tmp_path), project="betty-func-test")
    try:
        mlo.solve(*bilevel(), steps=10, logging=quiet(w, every=5))
    finally:
        wandb.teardown()  # wandb keeps its settings process-wide: the next test starts afresh
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_progress_bar_on_a_pseudo_terminal_does_not_garble_lines(tmp_path):
    """Console lines printed while the bar runs: on a terminal each shows whole on a line of
    its own (the bar is cleared before and redrawn after it); the bar has rate and ETA."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import torch
        from betty_func import mlo, optim
        p = mlo.Problem("p", lambda w, b: ((w - 1.0) ** 2).sum(), torch.zeros(2), optim.sgd(0.01))
        mlo.solve([p], {}, steps=400, logging=mlo.Logging(every=100))
    """))
    out = _run_on_a_pty([sys.executable, str(script)])
    screen = _render(out)
    logged = [ln for ln in screen if ln.startswith("[step ")]
    assert [ln.split("]")[0] for ln in logged] == [f"[step {k}/400" for k in (100, 200, 300, 400)]
    assert all(re.fullmatch(r"\[step \d+/400\] p/loss [0-9.e-]+  p/grad_norm [0-9.e-]+(  .*)?",
                            ln) for ln in logged), logged
    bar = [ln for ln in screen if "step/s" in ln or "it/s" in ln]
    assert bar and "400/400" in bar[-1], screen


def _run_on_a_pty(cmd):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 x 120
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=dict(os.environ))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def _render(text):
    """What a terminal shows: \\r returns to column 0, ESC[A moves up, ESC[K clears."""
    lines, row, col = [""], 0, 0
    for tok in re.split(r"(\x1b\[[0-9;]*[A-Za-z]|\r|\n)", text):
        if tok == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif tok == "\r":
            col = 0
        elif tok.startswith("\x1b["):
            code = tok[-1]
            n = int(tok[2:-1] or 1) if tok[2:-1].isdigit() else 1
            if code == "A":
                row = max(0, row - n)
            elif code == "K":
                lines[row] = lines[row][:col]
        elif tok:
            cur = lines[row].ljust(col)
            lines[row] = cur[:col] + tok + cur[col + len(tok):]
            col += len(tok)
    return [ln.rstrip() for ln in lines if ln.strip()]


def test_betty_front_end_logs_to_wandb_offline(tmp_path, monkeypatch):
    """Betty's logger_type='wandb' goes through logging.WandB: a run is started when none is,
    and the problems' scalars reach it (offline files; no account)."""
    pytest.importorskip("wandb")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _betty_small import program
    from betty_func.betty.configs import Config, EngineConfig
    import wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()  # its process-wide settings re-read from this environment
    try:
        e = program(engine_config=EngineConfig(train_iters=4, logger_type="wandb"),
                    inner_config=Config(type="darts", log_step=1))
        e.run()
        assert wandb.run is not None and "inner/loss" in wandb.run.summary.keys()
        wandb.finish()
    finally:
        wandb.teardown()
    assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
