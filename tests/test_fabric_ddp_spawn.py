"""Two real ``Fabric(strategy="ddp_spawn")`` ranks: the values ``self.log_dict`` logs through Fabric, and a warning's line.

Previous tests only simulated Lightning's route through Fabric. Here a spawned 2-rank gloo run
(``tests/helpers/fabric_spawn_run.py``) scores 101 rows split unevenly by ``UnpaddedDistributedSampler``
(which ``fabric.setup_dataloaders`` keeps) and logs the synced values with ``model.log_dict(module.compute())``;
they must be scikit-learn's and numpy's over all 101 rows, each once. A warning raised in the launched function
names that function's line (the user's frame is on the rank's stack), not one of Fabric's or ``multiprocessing``'s.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

pytest.importorskip("lightning")

from tests.helpers import fabric_spawn_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "fabric_spawn_run.py"


@pytest.mark.ddp
def test_fabric_ddp_spawn_logs_the_whole_sets_values_and_warns_at_the_users_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LOCAL_RANK", None)
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(int((tmp_path / f"seen_rank{r}.txt").read_text()) for r in (0, 1)) == [50, 51]
    (version,) = (tmp_path / "fabric").iterdir()
    with open(version / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))  # rank 0's logger alone writes
    p, y = (t.numpy() for t in fabric_spawn_run.data())
    for column, task in enumerate(("click", "like")):
        pt, yt = p[:, column], y[:, column]
        base = yt.mean()
        ce = -np.mean(yt * np.log(pt) + (1 - yt) * np.log(1 - pt))
        np.testing.assert_allclose(
            float(row[f"val/ne/{task}"]), ce / -(base * np.log(base) + (1 - base) * np.log(1 - base)), rtol=1e-9
        )
        np.testing.assert_allclose(float(row[f"val/auc/{task}"]), roc_auc_score(yt, pt), rtol=1e-12)
        np.testing.assert_allclose(float(row[f"val/ctr/{task}"]), base, rtol=1e-12)
    (line,) = [i + 1 for i, text in enumerate(SCRIPT.read_text().splitlines()) if "# COMPUTE_LINE" in text]
    for rank in (0, 1):
        caught = [json.loads(x) for x in (tmp_path / f"warnings_rank{rank}.jsonl").read_text().splitlines()]
        undefined = [(w["file"], w["line"]) for w in caught if w["category"] == "UndefinedMetricWarning"]
        assert undefined == [(str(SCRIPT), line)], caught
