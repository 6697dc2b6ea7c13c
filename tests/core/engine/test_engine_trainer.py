"""The training loop in-process: determinism, run directory, schedules, train-step overrides, resume."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tiny_app import MinimaxApp, TinyApp, TinyConfig

from ssmkit.engine.config import TrainConfig, load_config
from ssmkit.engine.tracking import Progress
from ssmkit.engine.trainer import Trainer, lr_lambda


def _app(cls=TinyApp, *overrides):
    base = ["train.batch_size=16", "train.epochs=3", "train.lr=0.01", "train.log_every=2", "train.device=cpu"]
    return cls(load_config(TinyConfig, None, [*base, *overrides]))


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_run_directory_and_learning(tmp_path):
    val = Trainer(_app(), tmp_path / "run", verbose=False).fit()
    run = tmp_path / "run"
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "report.md", "model.safetensors",
              "checkpoints/best.safetensors", "plots/loss.png", "plots/mse.png", "plots/lr.png"):
        assert (run / f).is_file(), f
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["mse"] for r in recs if r["split"] == "val"]
    assert len(vals) == 3 and vals[-1] < vals[0]  # it learns
    assert val["mse"] == vals[-1]
    train_steps = [r["step"] for r in recs if r["split"] == "train"]
    assert train_steps == sorted(train_steps)
    report = (run / "report.md").read_text()
    assert "validation mse" in report and "plots/loss.png" in report
    assert len(list((run / "checkpoints").glob("step_*"))) == 2  # keep_checkpoints=2


def test_cpu_runs_are_deterministic(tmp_path):
    Trainer(_app(), tmp_path / "a", verbose=False).fit()
    Trainer(_app(), tmp_path / "b", verbose=False).fit()
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    Trainer(_app(TinyApp, "seed=1"), tmp_path / "c", verbose=False).fit()
    wc = _weights(tmp_path / "c")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_in_process_resume_is_exact(tmp_path):
    Trainer(_app(TinyApp, "train.ckpt_every=4"), tmp_path / "full", verbose=False).fit()
    # Crash in step 7 (checkpoints at 4), then resume.
    part = tmp_path / "part"

    class Crashing(TinyApp):
        def train_step(self, ctx, batch):
            if ctx.global_step == 6:
                raise RuntimeError("simulated crash")
            return super().train_step(ctx, batch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_app(Crashing, "train.ckpt_every=4"), part, verbose=False).fit()
    assert [p.name for p in (part / "checkpoints").glob("step_*")] == ["step_00000004"]
    Trainer(_app(TinyApp, "train.ckpt_every=4"), part, verbose=False).fit(resume=True)
    wf, wp = _weights(tmp_path / "full"), _weights(part)
    assert all(torch.equal(wf[k], wp[k]) for k in wf)
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(full) == strip(resumed)  # records past the checkpoint were rewritten, not duplicated


def test_train_step_override_with_two_optimizers(tmp_path):
    val = Trainer(_app(MinimaxApp, "train.grad_clip=0.5"), tmp_path / "mm", verbose=False).fit()
    recs = [json.loads(x) for x in (tmp_path / "mm" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    assert "loss_first" in train[0] and "grad_norm/head" in train[0] and "grad_norm/main" in train[0]
    assert math.isfinite(val["mse"])
    state = json.loads(next((tmp_path / "mm" / "checkpoints").glob("step_*/state.json")).read_text())
    assert set(state["optimizers"]) == {"main", "head"}


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_lr_schedule(schedule):
    t = TrainConfig(schedule=schedule, warmup_steps=4, min_lr_ratio=0.1)
    f = lr_lambda(t, total_steps=20)
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    end = f(20)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.1)
    if schedule != "constant":
        assert all(f(k) >= f(k + 1) for k in range(4, 20))


def test_batch_must_split_over_ranks(tmp_path):
    from ssmkit.engine.runtime import DistInfo

    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        Trainer(_app(), tmp_path, DistInfo(rank=0, world_size=3))


def test_too_few_samples(tmp_path):
    from ssmkit.engine.app import DataError

    with pytest.raises(DataError, match="fewer than train.batch_size=16"):
        Trainer(_app(TinyApp, "data.n=8"), tmp_path, verbose=False).fit()


def test_progress_is_quiet_off_tty():
    buf = io.StringIO()  # not a TTY
    p = Progress(total=10, enabled=True, stream=buf)
    for _ in range(5):
        p.update(1, {"loss": 0.5})
    assert buf.getvalue() == ""  # no bar, no carriage returns
    p.write("val: acc=0.9")
    assert buf.getvalue().startswith("val: acc=0.9") and "eta" in buf.getvalue()
    p.close()


def test_demo_all_writes_one_combined_report(tmp_path):
    from ssmkit.engine.commands import demo_all

    class Broken(TinyApp):
        name = "broken"

        def build_dataset(self, split):
            from ssmkit.engine.app import DataError

            raise DataError("no data here")

    class Quick(TinyApp):
        name = "quick"
        demo_overrides = ["train.batch_size=16", "train.epochs=1", "train.device=cpu"]

    report, results = demo_all([Quick, Broken], tmp_path / "demo", verbose=False)
    text = report.read_text()
    assert "| quick | mse = " in text and "| broken | FAILED: DataError: no data here" in text
    ok = results[0]
    assert (ok.run_dir / "report.md").is_file() and (ok.run_dir / "eval_test.json").is_file()
    assert ok.run_dir.parent == tmp_path / "demo" / "quick"
