"""Non-finite values in a run: tracked on the device every step, read only where ``solve``
reads anyway (log, validation and checkpoint steps, the end), then raised, warned or counted."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch

from .._errors import fail

WHAT = ((1, "loss"), (2, "gradient"), (4, "CG residual"), (8, "params"))


class Tracker:
    """Per problem: the first step whose update held a NaN or inf since the last check, what it
    was (the step's bit mask, ``_step.nonfinite_code``), and how many updates had one."""

    def __init__(self, policy: str, lowers: dict, order: tuple):
        self.policy, self.lowers, self.order = policy, lowers, order
        self.first: dict = {}
        self.code: dict = {}
        self.count: dict = {}
        self.checked = 0  # the last step checked
        self.warned: set = set()

    def add(self, t: int, logs: dict) -> None:
        """Take this step's ``nonfinite`` masks out of ``logs`` (device tensors, no sync)."""
        for name, d in logs.items():
            code = d.pop("nonfinite", None)
            if code is None:
                continue
            bad = code != 0
            first = self.first.get(name, torch.zeros((), dtype=torch.int64, device=code.device))
            new = (first == 0) & bad
            self.first[name] = torch.where(new, t, first)
            self.code[name] = torch.where(new, code, self.code.get(name, torch.zeros_like(code)))
            self.count[name] = self.count.get(name, 0) + bad.to(torch.int64)

    def check(self, t: int, rt: Any = None) -> Optional[dict]:
        """Read what was seen up to step ``t``: raise (``raise``), warn once per problem
        (``warn``), or return ``{name: updates skipped}`` (``skip``) for the history."""
        names = sorted(self.first)
        if not names:
            return None
        rows = torch.stack([torch.stack([self.first[n], self.code[n].to(torch.int64),
                                         self.count[n]]) for n in names]).tolist()
        seen = {n: r for n, r in zip(names, rows)}
        if rt is not None:  # every rank stops alike: a NaN on one shard is every rank's
            reports = rt.gather(seen)
            seen = {n: max((r[n] for r in reports), key=lambda row: (row[0] > 0, -row[0]))
                    for n in names}
        since, self.checked = self.checked, t
        if self.policy == "skip":
            return {f"{n}/skipped_nonfinite": float(row[2]) for n, row in seen.items()}
        # the earliest first: a NaN batch of a lower shows in its uppers' hypergradients too
        ranked = sorted(seen.items(), key=lambda kv: (kv[1][0] == 0, kv[1][0],
                                                      self.order.index(kv[0])))
        for n, (first, code, _) in ranked:
            if first and (self.policy == "raise" or n not in self.warned):
                msg = self._message(n, first, code, since, t)
                if self.policy == "raise":
                    fail("solve(..., on_nonfinite='raise')", msg, None, "Lower the learning rate "
                         "or the Neumann alpha, clip gradients, check the data and the loss for "
                         "a log of 0; on_nonfinite='skip' drops such updates instead.",
                         exc=FloatingPointError)
                warnings.warn(f"solve: {msg}; going on (on_nonfinite='warn').", RuntimeWarning,
                              stacklevel=3)
                self.warned.add(n)
        for n in names:  # a new interval starts
            self.first[n] = torch.zeros_like(self.first[n])
        return None

    def _message(self, n: str, first: int, code: int, since: int, t: int) -> str:
        what = [("hypergradient" if w == "gradient" and self.lowers.get(n) else w)
                for bit, w in WHAT if code & bit]
        where = (f"at step {first}" if since + 1 == t else
                 f"at step {first} (first seen in the interval {since + 1}-{t}; the run is "
                 f"checked where it logs, validates or checkpoints)")
        return f"the {' and '.join(what)} of '{n}' {'is' if len(what) == 1 else 'are'} NaN or " \
               f"inf {where}"
