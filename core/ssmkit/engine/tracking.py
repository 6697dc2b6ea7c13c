"""Metrics to metrics.jsonl (+ metrics.csv, TensorBoard when installed) and a progress bar.

The bar (tqdm) shows ETA and live loss/metrics on a terminal; off a TTY (CI, logs, pipes) it stays
silent and only the evaluation lines are printed, so logs are not flooded with carriage returns.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ssmkit.engine.files import atomic_write_text


def _scalar(v: Any) -> float | int | str | None:
    if hasattr(v, "item"):
        v = v.detach().float().mean().item() if hasattr(v, "detach") else v.item()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return None


class MetricsLogger:
    """Append-only ``metrics.jsonl``; every record carries ``step`` and ``split``."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.csv_path = run_dir / "metrics.csv"
        self.enabled = enabled
        self._tb = None
        if enabled:
            try:  # optional: only when the tensorboard package is installed
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except Exception:
                self._tb = None

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resume restarts from)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log(self, split: str, step: int, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"split": split, "step": int(step), **extra}
        for k, v in values.items():
            s = _scalar(v)
            if s is not None:
                rec[k] = s
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if self._tb is not None:
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                        self._tb.add_scalar(f"{split}/{k}", v, step)
        return rec

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def write_csv(self) -> None:
        if not self.enabled:
            return
        recs = self.records()
        cols: list[str] = []
        for r in recs:
            cols += [k for k in r if k not in cols]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(recs)

    def close(self) -> None:
        self.write_csv()
        if self._tb is not None:
            self._tb.close()


def _fmt(values: dict[str, Any]) -> str:
    parts = []
    for k, v in values.items():
        s = _scalar(v)
        if isinstance(s, float):
            parts.append(f"{k}={s:.4g}")
        elif s is not None:
            parts.append(f"{k}={s}")
    return " ".join(parts)


class Progress:
    """Step progress with ETA: a tqdm bar on a TTY, silence otherwise."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", enabled: bool = True,
                 stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.total, self.n, self.t0, self.n0 = total, initial, time.monotonic(), initial
        self._bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True,
                             leave=True, smoothing=0.1)

    def update(self, n: int = 1, values: dict[str, Any] | None = None) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            if values:
                self._bar.set_postfix_str(_fmt(values), refresh=False)

    def eta_s(self) -> float:
        done = self.n - self.n0
        if done <= 0:
            return float("nan")
        return (time.monotonic() - self.t0) / done * (self.total - self.n)

    def write(self, line: str) -> None:
        """A line that survives the bar (evaluation results); printed on or off a TTY."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            eta = self.eta_s()
            tail = f" [{self.n}/{self.total}, eta {eta:.0f}s]" if math.isfinite(eta) and self.n < self.total else ""
            print(line + tail, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


__all__ = ["MetricsLogger", "Progress"]
