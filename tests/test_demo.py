"""``torchmetrics-ext demo``: the training run's report files exist and hold the right numbers.

References are independent of the code under test: scikit-learn's curves and AUC, numpy's
log loss, digitize and bincount, and counts of the synthetic data redrawn from its seed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")
pytest.importorskip("matplotlib")

from sklearn import metrics as skm

from torchmetrics_ext import cli
from torchmetrics_ext.demo import DemoConfig, run_training_demo
from torchmetrics_ext.demo.data import SOURCES, SyntheticWorld

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("click", "like")
METRICS = ("ne", "auc", "auprc", "calibration", "ctr", "gauc", "ndcg@10", "recall@10")


def _columns(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns as floats; ``source`` (the sources by name) as strings."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([row[key] if key == "source" else float(row[key]) for row in rows]) for key in rows[0]}


def _logged(path: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, cell in row.items():
                if key not in ("step", "epoch") and cell:
                    series.setdefault(key, []).append((int(row["step"]), float(cell)))
    return series


def _ne(p: np.ndarray, y: np.ndarray) -> float:
    ctr = y.mean()
    log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(log_loss / -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)))


CONFIG = DemoConfig(steps=40, batch_size=32, val_sessions=400, log_every=10)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(**{**CONFIG.__dict__, "output_dir": str(out)})
    result = run_training_demo(config)
    return out, result


def test_the_report_directory_holds_every_picture_and_the_index_shows_them(report):
    out, result = report
    assert result is not None and Path(result["report"]) == out / "index.html"
    index = (out / "index.html").read_text()
    stems = ["overview", "throughput", "sources"] + [f"metric_{m}" for m in METRICS]
    stems += [f"{kind}_{task}" for task in TASKS for kind in ("roc", "pr", "reliability")]
    import matplotlib.image as mpimg

    for stem in stems:
        path = out / f"{stem}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        image = mpimg.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300, stem
        assert image[..., :3].std() > 0.05, f"{stem} is blank"  # something is drawn
        assert f'src="{stem}.png"' in index
    assert (out / "logs" / "metrics.csv").exists() and "logs/metrics.csv" in index
    assert "click train" in index and "search" in index  # the summary table


def test_the_curve_files_equal_sklearn_on_the_saved_validation_predictions(report):
    out, _ = report
    preds = _columns(out / "val_predictions.csv")
    for task in TASKS:
        p, y = preds[f"{task}_pred"].astype(np.float32), preds[task]
        roc = _columns(out / f"roc_{task}.csv")
        fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
        np.testing.assert_allclose(roc["fpr"], fpr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(roc["tpr"], tpr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(roc["threshold"][1:], thresholds[1:], rtol=1e-6)
        pr = _columns(out / f"pr_{task}.csv")
        precision, recall, pr_thresholds = skm.precision_recall_curve(y, p)
        np.testing.assert_allclose(pr["precision"], precision[:-1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pr["recall"], recall[:-1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pr["threshold"], pr_thresholds, rtol=1e-6)
        rel = _columns(out / f"reliability_{task}.csv")
        bins = np.digitize(p.astype(np.float64), np.linspace(0, 1, 21)[1:-1])
        weight = np.bincount(bins, minlength=20)
        np.testing.assert_array_equal(rel["weight"], weight)
        seen = weight > 0
        np.testing.assert_allclose(rel["label_rate"][seen], np.bincount(bins, y, 20)[seen] / weight[seen], rtol=1e-12)
        np.testing.assert_allclose(
            rel["mean_prediction"][seen], np.bincount(bins, p, 20)[seen] / weight[seen], rtol=1e-6
        )
        assert np.isnan(rel["label_rate"][~seen]).all()


def test_logged_validation_values_equal_a_recomputation_from_the_saved_predictions(report):
    out, result = report
    logged = _logged(out / "logs" / "metrics.csv")
    preds = _columns(out / "val_predictions.csv")
    for task in TASKS:
        p, y = preds[f"{task}_pred"], preds[task]
        last = {name: logged[f"val/{name}/{task}"][-1] for name in ("ne", "auc", "auprc", "ctr", "calibration")}
        assert {step for step, _ in last.values()} == {CONFIG.steps - 1}  # the final model's validation
        assert last["ne"][1] == pytest.approx(_ne(p, y), rel=1e-5)
        assert last["auc"][1] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-5)
        assert last["auprc"][1] == pytest.approx(skm.average_precision_score(y, p), rel=1e-5)
        assert last["ctr"][1] == pytest.approx(y.mean(), rel=1e-9)
        assert last["calibration"][1] == pytest.approx(p.sum() / y.sum(), rel=1e-5)
        assert result["val"][f"val/ne/{task}"] == pytest.approx(last["ne"][1])
        # five validations, training metrics every `log_every` steps with lifetime and window values
        assert len(logged[f"val/ne/{task}"]) == 5
        for name in METRICS:
            # every `log_every` steps, and again at the end of the epoch (the callback's epoch-end log)
            steps = [step for step, _ in logged[f"train/{name}/{task}"]]
            assert sorted(set(steps)) == list(range(CONFIG.log_every - 1, CONFIG.steps, CONFIG.log_every))
            assert len(logged[f"train/{name}/{task}/window"]) == len(steps)


def test_the_aggregated_source_records_count_the_training_data(report):
    out, result = report
    world = SyntheticWorld.create(CONFIG.num_users, CONFIG.num_items, seed=CONFIG.seed)
    data = world.sample(CONFIG.steps * CONFIG.batch_size, seed=CONFIG.seed + 1).columns
    source, click = data["source"].numpy(), data["click"].numpy()
    logged = _logged(out / "logs" / "metrics.csv")
    for s, name in enumerate(SOURCES):
        assert logged[f"train_{name}/impressions"][-1][1] == (source == s).sum()
        assert logged[f"train_{name}/clicks"][-1][1] == click[source == s].sum()
    assert result["train"]["train/throughput/total_examples"] == len(source)
    assert np.isfinite(result["train"]["train/throughput/lifetime_throughput"])


def test_the_summary_table_prints_train_and_validation_per_task(report, capsys):
    from torchmetrics_ext.demo.report import summary_table

    _, result = report
    table = summary_table(result["train"], result["val"], TASKS)
    header = table.splitlines()[0].split()
    assert header == ["metric", "click", "train", "click", "val", "like", "train", "like", "val"]
    assert all(any(line.startswith(name) for line in table.splitlines()) for name in METRICS)
    assert "feed" in table and "search" in table


@pytest.mark.ddp
def test_the_demo_trains_on_two_cpu_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, "-m", "torchmetrics_ext.cli", "demo", "--devices", "2", "--steps", "20"]
    result = subprocess.run(
        [*command, "--batch-size", "16", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "index.html").exists() and "click train" in result.stdout
    # validation is synced over both ranks (each session once): the value of the whole set
    preds = _columns(tmp_path / "val_predictions.csv")
    logged = _logged(tmp_path / "logs" / "metrics.csv")
    for task in TASKS:
        assert logged[f"val/ne/{task}"][-1][1] == pytest.approx(_ne(preds[f"{task}_pred"], preds[task]), rel=1e-5)
        assert logged[f"val/ctr/{task}"][-1][1] == pytest.approx(preds[task].mean(), rel=1e-9)
    # training counted both ranks' impressions: 2 x 20 steps x 16 sessions
    world = SyntheticWorld.create(seed=0)
    total = world.sample(2 * 20 * 16, seed=1).columns["click"].numel()
    assert logged["train/throughput/total_examples"][-1][1] == total


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--steps", "0"], "--steps and --devices must be positive"),
        (["--devices", "0"], "--steps and --devices must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--quick", "--samples", "0"], "--samples and --queries must be positive"),
    ],
)
def test_demo_rejects_bad_arguments(argv, match, capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", *argv])
    assert match in capsys.readouterr().err


def test_the_training_demo_stops_before_training_when_the_report_cannot_be_written(monkeypatch, capsys):
    """Without matplotlib (e.g. only the `lightning` extra) the demo says which extra, before any training."""
    import importlib.abc

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "matplotlib" or name.startswith("matplotlib."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    monkeypatch.setattr(sys, "meta_path", [Hide(), *sys.meta_path])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    import torchmetrics_ext.demo as demo

    monkeypatch.setattr(demo, "run_training_demo", lambda config: pytest.fail("trained without matplotlib"))
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--steps", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "need matplotlib, from the `demo` extra" in err and "pip install 'torchmetrics-ext[demo]'" in err


def test_the_readme_picture_is_a_small_png():
    import re

    readme = (ROOT / "README.md").read_text()
    (path,) = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    data = (ROOT / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_the_summary_table_shows_an_undefined_or_infinite_value_instead_of_failing(value, shown):
    """A tiny run's validation NE can be NaN (one class seen); the table printed it via ``int(value)`` and died."""
    from torchmetrics_ext.demo.report import summary_table

    table = summary_table({"train/ne/click": 0.5}, {"val/ne/click": value}, ["click"])
    assert table.splitlines()[-1].split() == ["ne", "0.5000", shown]


def test_the_summary_table_formats_a_whole_ratio_as_a_ratio_and_counts_as_counts():
    """Any whole value >= 1 printed as a count: a calibration of exactly 1.0 showed as "1", a mean session length of
    3.0 as "3"; the cells follow what the key is (a count of impressions or clicks, else a ratio or mean)."""
    from torchmetrics_ext.demo.report import summary_table

    train = {"train/calibration/click": 1.0, "train_feed/impressions": 1200.0, "train_feed/clicks": 48.0}
    train |= {"train_feed/click_rate": 0.04, "train_feed/session_length_stat_mean": 3.0}
    table = summary_table(train, {"val/calibration/click": 2.0}, ["click"]).splitlines()
    assert next(line for line in table if line.startswith("calibration")).split() == [
        "calibration",
        f"{1.0:.4f}",
        f"{2.0:.4f}",
    ]
    feed = next(line for line in table if line.startswith("feed")).split()
    assert feed == ["feed", "1,200", "48", f"{0.04:.4f}", f"{3.0:.4f}"]


def test_the_source_table_says_its_click_rate_is_a_mean_over_sessions():
    """The default run printed feed 310,805 impressions, 35,839 clicks and click_rate 0.1151, where clicks / impressions
    is 0.1153: the column is the mean of the sessions' click rates (data.py's MEAN record), which the table did not
    say. Reference: two sessions of 1 and 3 impressions with 1 click each, rates 1 and 1/3."""
    from torchmetrics_ext.demo.report import summary_table

    mean_over_sessions, per_impression = (1 + 1 / 3) / 2, 2 / 4
    train = {"train_feed/impressions": 4.0, "train_feed/clicks": 2.0, "train_feed/click_rate": mean_over_sessions}
    table = summary_table(train, {}, ["click"])
    assert f"{mean_over_sessions:.4f}" in table and f"{per_impression:.4f}" not in table
    assert "click_rate and session_length: means over sessions, not clicks / impressions" in table


def test_a_demo_shorter_than_its_warm_up_says_throughput_not_measured_and_validates_as_its_docstring_says(
    tmp_path, capsys
):
    """13 steps with `log_every=40` (a throughput warm-up of 20 steps) printed "training throughput: nan
    impressions/s"; and the docstring promised five validations where Lightning ran 13 // 2 = 6."""
    small = {"batch_size": 8, "val_sessions": 16, "num_users": 20, "num_items": 10}
    config = DemoConfig(steps=13, log_every=40, output_dir=str(tmp_path), report=False, **small)
    result = run_training_demo(config)
    assert result is not None and np.isnan(result["train"]["train/throughput/lifetime_throughput"])
    out = capsys.readouterr().out
    assert "nan impressions" not in out
    warmup = max(40 // 2, 1)  # the demo's throughput warm-up: half of log_every
    assert f"training throughput: not measured: fewer than {warmup + 1} training steps" in out
    validated = [row["step"] for row in csv.DictReader(open(tmp_path / "logs" / "metrics.csv")) if row["val/ne/click"]]
    assert len(validated) == 13 // (13 // 5) == 6  # as DemoConfig.validation_every's docstring counts them
    assert "steps // validation_every" in " ".join(DemoConfig.validation_every.__doc__.split())
    assert "five" not in run_training_demo.__doc__.splitlines()[0]


def test_without_the_report_the_demo_trains_logs_and_returns_no_report_path(tmp_path):
    """``DemoConfig(report=False)``: the same training and logs, no pictures or report files (drawing them took
    most of a short run), ``"report": None``; the examples counted equal the training data redrawn from its seed.

    The validation predictions are written all the same (the README's ``evaluate ... --by source`` reads
    them), each row's source by the name the demo's tables use: ``evaluate`` per source equals sklearn."""
    small = DemoConfig(
        steps=3, batch_size=8, val_sessions=60, num_users=20, num_items=10, log_every=1, output_dir=str(tmp_path)
    )
    result = run_training_demo(DemoConfig(**{**small.__dict__, "report": False}))
    assert result is not None and result["report"] is None
    assert sorted(result) == ["report", "train", "val"]
    assert not list(tmp_path.glob("*.png")) and [p.name for p in tmp_path.glob("*.csv")] == ["val_predictions.csv"]
    assert not (tmp_path / "index.html").exists()
    preds = _columns(tmp_path / "val_predictions.csv")
    assert set(preds["source"]) == set(SOURCES)
    pytest.importorskip("pyarrow")
    from torchmetrics_ext.evaluate import evaluate

    tasks = {task: (f"{task}_pred", task) for task in TASKS}
    values = evaluate(tmp_path / "val_predictions.csv", tasks, ["auc"], by=["source"]).values
    for source in SOURCES:
        rows = preds["source"] == source
        for task in TASKS:
            y, p = preds[task][rows], preds[f"{task}_pred"][rows].astype(np.float32)
            assert 0 < y.sum() < len(y), (source, task)  # both classes: AUC defined
            assert values[f"auc/{task}/source={source}"] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert (tmp_path / "logs" / "metrics.csv").exists()
    world = SyntheticWorld.create(small.num_users, small.num_items, seed=small.seed)
    clicks = world.sample(small.steps * small.batch_size, seed=small.seed + 1).columns["click"].numpy()
    assert result["train"]["train/throughput/total_examples"] == len(clicks)
    assert result["train"]["train/ctr/click"] == pytest.approx(clicks.mean(), rel=1e-9)
    assert {f"val/{name}/{task}" for name in METRICS for task in TASKS} <= set(result["val"])


def test_no_report_on_the_command_line_skips_the_report_and_needs_no_matplotlib(monkeypatch):
    """``torchmetrics-ext demo --no-report`` builds ``DemoConfig(report=False)``; without matplotlib (only the
    `lightning` extra) it trains, where the demo with its report stops before training."""
    import importlib.abc

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "matplotlib" or name.startswith("matplotlib."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    monkeypatch.setattr(sys, "meta_path", [Hide(), *sys.meta_path])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    import torchmetrics_ext.demo as demo

    configs = []
    monkeypatch.setattr(demo, "run_training_demo", configs.append)
    assert cli.main(["demo", "--steps", "3", "--no-report"]) == 0
    assert [(c.steps, c.report) for c in configs] == [(3, False)]
    assert DemoConfig().report is True  # the default writes it, as `torchmetrics-ext demo` does
