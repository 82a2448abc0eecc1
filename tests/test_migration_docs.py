"""The migration guides and getting_started hold up for a user arriving from another library today.

Every fenced ``python`` block of these pages runs: the doctest blocks in one fresh interpreter, page by
page, top to bottom (no conftest, no pytest warning filters: what a user pasting them sees); a plain block
that needs objects it does not define is marked ``<!-- snippet: needs a, b -->`` and run here with minimal
ones, its values checked against a by-hand reference; a block that cannot run is marked
``<!-- snippet: skip REASON -->``. The pages' "X in TorchMetrics is Y here" claims are checked against
TorchMetrics itself (and numpy formulas) on random data with ties, empty queries and cutoffs, and every
argument a page quotes in a call exists with that name, and the defaults it states are the code's.

``TMX_MIGRATION_SEEDS`` (default 3) sets how many random data sets each comparison draws.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext import aggregation as tma
from torchmetrics_ext import functional as tmf
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [
    "migration_torchmetrics.md",
    "migration_torchrec.md",
    "migration_torchtune.md",
    "migration_torcheval.md",
    "migration_trainer.md",
    "getting_started.md",
]
SEEDS = range(int(os.environ.get("TMX_MIGRATION_SEEDS", "3")))
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!--\s*snippet:\s*(needs|skip)\s+(.*?)\s*-->\s*\n$")
_OPTIONAL = ("lightning", "transformers", "accelerate", "matplotlib", "pandas", "pyarrow")


def _blocks(guide: str) -> list[tuple[int, str, str, tuple[str, str] | None]]:
    """``(line, kind, body, marker)`` of each python block; kind is ``doctest`` or ``plain``."""
    text = (ROOT / "docs" / guide).read_text()
    out = []
    for match in _FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()]
        marker = _MARKER.search(before[-300:])
        kind = "doctest" if match.group(2).lstrip().startswith(">>>") else "plain"
        out.append((before.count("\n") + 1, kind, match.group(2), marker.group(1, 2) if marker else None))
    return out


def test_every_python_block_of_the_guides_is_run_or_says_why_not():
    """A plain block (not a doctest) ran nowhere: --doctest-glob only sees ``>>>`` examples."""
    unaccounted = []
    for guide in GUIDES:
        blocks = _blocks(guide)
        assert blocks, guide
        for line, kind, _, marker in blocks:
            if kind == "plain" and marker is None:
                unaccounted.append(f"{guide}:{line}")
            if marker is not None and marker[0] == "needs":
                needs = {name.strip() for name in marker[1].split("(")[0].split(",")}
                assert f"{guide}:{needs_key(needs)}" in _PLAIN_RUNNERS, (guide, line, needs)
            if marker is not None and marker[0] == "skip":
                assert len(marker[1]) > 10, f"{guide}:{line}: a skipped block says why"
    assert not unaccounted, f"plain python blocks that no test runs (mark them): {unaccounted}"


_RUNNER = r"""
import doctest, json, re, sys, warnings
from pathlib import Path
fence = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
failures = {}
for path in sys.argv[1:]:
    text = Path(path).read_text()
    keep = [""] * (text.count("\n") + 1)  # the page's line numbers, only its python doctest blocks
    for match in fence.finditer(text):
        if match.group(1) == "python" and match.group(2).lstrip().startswith(">>>"):
            first = text[: match.start(2)].count("\n")
            for offset, line in enumerate(match.group(2).split("\n")):
                keep[first + offset] = line
    test = doctest.DocTestParser().get_doctest("\n".join(keep), {"__name__": "__guide__"}, path, path, 0)
    report = []
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    runner = doctest.DocTestRunner(optionflags=flags)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        runner.run(test, out=report.append)
    if runner.failures:
        failures[path] = "".join(report)[-4000:]
print(json.dumps(failures))
"""


def test_the_guides_doctest_blocks_run_in_a_fresh_interpreter():
    """Each page's examples, top to bottom in one namespace, as a reader pasting them in a new interpreter."""
    guides, skipped = [], []
    for guide in GUIDES:
        sources = "\n".join(body for _, kind, body, _ in _blocks(guide) if kind == "doctest")
        imported = set(re.findall(r"^>>> (?:from|import) (\w+)", sources, re.M))
        missing = [m for m in _OPTIONAL if m in imported and importlib.util.find_spec(m) is None]
        (skipped if missing else guides).append(str(ROOT / "docs" / guide))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, *guides], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"== {path}\n{report}" for path, report in failures.items())
    if skipped:
        pytest.skip(f"optional dependency missing for {skipped}")


def needs_key(needs: set[str]) -> str:
    return ",".join(sorted(needs))


def _run_trainer_second_eval_set(body: str) -> None:
    """migration_trainer.md's plain loop: minimal dataset, model and Trainer; values against the pandas recipe."""
    gen = torch.Generator().manual_seed(0)
    width = 30

    class Rerank(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.features = torch.randn(n, width, generator=gen)
            self.lengths = torch.randint(5, width + 1, (n,), generator=gen)
            self.relevant = (torch.rand(n, generator=gen) * self.lengths).long()

        def __len__(self) -> int:
            return len(self.features)

        def __getitem__(self, i: int) -> dict:
            inputs = {"x": self.features[i], "length": self.lengths[i]}
            return {"inputs": inputs, "relevant_index": self.relevant[i]}

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor, length: torch.Tensor) -> types.SimpleNamespace:
            padded = torch.arange(width) >= length[:, None]  # -10 in padded slots, as the page says
            return types.SimpleNamespace(logits=x.masked_fill(padded, -10.0))

    logged: dict[str, float] = {}
    dataset = Rerank(150)
    namespace = {"rerank_dataset": dataset, "model": Model(), "trainer": types.SimpleNamespace(log=logged.update)}
    exec(compile(body, "migration_trainer.md", "exec"), namespace)
    # the hand-written recipe: drop padded scores, rank of the relevant candidate (randn: no ties)
    ranks = np.array(
        [
            1 + int((kept > kept[r]).sum())
            for kept, r in (
                (dataset.features[i, : dataset.lengths[i]].numpy(), int(dataset.relevant[i])) for i in range(150)
            )
        ]
    )
    expected = {}
    for k in (1, 4, 5, 10, 20, 50, 100):
        expected[f"rerank_recall@{k}"] = float(np.mean(ranks <= k))
        expected[f"rerank_mrr@{k}"] = float(np.mean(np.where(ranks <= k, 1 / ranks, 0.0)))
    assert sorted(logged) == sorted(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-12), key


_PLAIN_RUNNERS = {"migration_trainer.md:model,rerank_dataset,trainer": _run_trainer_second_eval_set}


def test_the_guides_plain_blocks_run_with_the_objects_they_need():
    ran = 0
    for guide in GUIDES:
        for _, kind, body, marker in _blocks(guide):
            if kind == "plain" and marker is not None and marker[0] == "needs":
                needs = {name.strip() for name in marker[1].split("(")[0].split(",")}
                _PLAIN_RUNNERS[f"{guide}:{needs_key(needs)}"](body)
                ran += 1
    assert ran == len(_PLAIN_RUNNERS)


# --- "TorchMetrics' X is Y here" (migration_torchmetrics.md) -------------------------------------------


def _retrieval_data(seed: int, graded: bool, empty_queries: bool, nonpositive: bool = False):
    """Flat rows of 25 queries of 1-11 candidates, shuffled; tie-free positive scores unless ``nonpositive``."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 12, (25,), generator=gen)
    indexes = torch.repeat_interleave(torch.arange(25), sizes)
    preds = torch.randperm(len(indexes), generator=gen).double() / len(indexes) + 0.01
    if nonpositive:
        preds = preds - 0.5
    target = torch.randint(0, 4 if graded else 2, (len(indexes),), generator=gen)
    first = torch.cumsum(sizes, 0) - sizes
    if empty_queries:
        target[indexes < 5] = 0  # five queries without a relevant candidate
    else:
        target[first] = target[first].clamp(min=1)
    order = torch.randperm(len(indexes), generator=gen)
    return preds[order], target[order], indexes[order]


_ACTIONS = {"neg": "zero", "pos": "one", "skip": "skip"}  # the guide's Arguments table


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("action", sorted(_ACTIONS))
def test_the_retrieval_classes_give_torchmetrics_values_with_the_mapped_empty_target_action(seed, action):
    """Positive, tie-free scores: every class of the guide's table at every cutoff, empty queries included."""
    from torchmetrics import retrieval as R

    preds, target, indexes = _retrieval_data(seed, graded=True, empty_queries=True)
    binary = target > 0
    ours = {"empty_target_action": _ACTIONS[action]}
    theirs = {"empty_target_action": action}
    pairs = [(R.RetrievalMAP(**theirs), tmx.MAP(**ours)), (R.RetrievalRPrecision(**theirs), tmx.RPrecision(**ours))]
    for k in (None, 1, 3):
        pairs.append((R.RetrievalNormalizedDCG(top_k=k, **theirs), tmx.NDCG(k=k, **ours)))
        pairs.append((R.RetrievalMRR(top_k=k, **theirs), tmx.MRR(k=k, **ours)))
    for k in (1, 3, 20):
        pairs.append((R.RetrievalRecall(top_k=k, **theirs), tmx.RecallAtK(k=k, **ours)))
        pairs.append((R.RetrievalHitRate(top_k=k, **theirs), tmx.HitRate(k=k, **ours)))
        for adaptive in (False, True):
            pairs.append(
                (
                    R.RetrievalPrecision(top_k=k, adaptive_k=adaptive, **theirs),
                    tmx.PrecisionAtK(k=k, adaptive_k=adaptive, **ours),
                )
            )
    for reference, metric in pairs:
        graded = isinstance(reference, R.RetrievalNormalizedDCG)
        reference.update(preds, target if graded else binary, indexes)
        metric.update(preds, target, indexes=indexes)
        expected = reference.compute().item()
        assert metric.compute().item() == pytest.approx(expected, abs=1e-6), (type(reference).__name__, action)


@pytest.mark.parametrize("seed", SEEDS)
def test_skip_is_the_default_for_queries_without_relevant_candidates(seed):
    from torchmetrics.retrieval import RetrievalRecall

    preds, target, indexes = _retrieval_data(seed, graded=False, empty_queries=True)
    reference = RetrievalRecall(top_k=3, empty_target_action="skip")(preds, target, indexes)
    assert tmx.RecallAtK(k=3)(preds, target, indexes=indexes).item() == pytest.approx(reference.item(), abs=1e-6)
    assert inspect.signature(tmf.recall_at_k).parameters["empty_target_action"].default == "skip"


@pytest.mark.parametrize("seed", SEEDS)
def test_map_at_a_cutoff_divides_as_the_guide_says_on_each_side(seed):
    """TorchMetrics: precision sum over the relevant candidates in the top k; here: over all of them."""
    from torchmetrics.retrieval import RetrievalMAP

    preds, target, indexes = _retrieval_data(seed, graded=False, empty_queries=False)
    for k in (1, 2, 4):
        theirs, ours = [], []
        for q in indexes.unique():
            rows = indexes == q
            relevant = target[rows][torch.argsort(preds[rows], descending=True)].numpy()
            precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
            hits = (precision[:k] * relevant[:k]).sum()
            theirs.append(hits / relevant[:k].sum() if relevant[:k].sum() else 0.0)
            ours.append(hits / relevant.sum())
        reference = RetrievalMAP(top_k=k)(preds, target, indexes).item()
        assert reference == pytest.approx(np.mean(theirs), abs=1e-6)
        assert tmx.MAP(k=k)(preds, target, indexes=indexes).item() == pytest.approx(np.mean(ours), abs=1e-12)


def test_scores_at_or_below_zero_are_ranked_here():
    """Recall@1 of a query whose relevant candidate has the highest, negative, score: 1 here."""
    import torchmetrics
    from packaging.version import Version
    from torchmetrics.functional.retrieval import retrieval_recall

    preds, target = torch.tensor([-0.1, -0.5, -0.9]), torch.tensor([1, 0, 0])
    assert tmf.recall_at_k(preds[None], target[None], k=1).item() == 1.0
    if Version(torchmetrics.__version__) >= Version("1.7.4"):  # the guide's version bound
        assert retrieval_recall(preds, target, top_k=1).item() == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_ignore_index_is_a_mask_here(seed):
    from torchmetrics.retrieval import RetrievalRecall

    preds, target, indexes = _retrieval_data(seed, graded=False, empty_queries=False)
    labelled = target.clone()
    labelled[torch.arange(len(target)) % 4 == 1] = -100
    reference = RetrievalRecall(top_k=3, ignore_index=-100, empty_target_action="skip")(preds, labelled, indexes)
    ours = tmx.RecallAtK(k=3)(preds, target, indexes=indexes, mask=labelled != -100)
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_recall_at_k_is_multiclass_accuracy_top_k_micro(seed):
    from torchmetrics.classification import MulticlassAccuracy

    gen = torch.Generator().manual_seed(seed)
    for classes in (2, 5, 9):
        scores = torch.rand(120, classes, generator=gen)
        labels = torch.randint(0, classes, (120,), generator=gen)
        for k in range(1, classes + 1):
            reference = MulticlassAccuracy(num_classes=classes, top_k=k, average="micro")(scores, labels)
            ours = tmx.MulticlassRecallAtK(num_classes=classes, k=k)(scores, labels)
            assert ours.item() == pytest.approx(reference.item(), abs=1e-6), (classes, k)
    tied = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])  # the true class ranks last among equal scores
    assert tmx.MulticlassRecallAtK(num_classes=3, k=1)(tied, torch.tensor([0, 2])).item() == 0.0
    assert tmx.MulticlassRecallAtK(num_classes=3, k=2)(tied, torch.tensor([0, 2])).item() == 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_grouped_auc_over_query_ids_is_retrieval_auroc(seed):
    """Queries holding both classes, tied scores: the guide's stand-in for RetrievalAUROC."""
    from torchmetrics.retrieval import RetrievalAUROC

    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 15, (20,), generator=gen)
    indexes = torch.repeat_interleave(torch.arange(20), sizes)
    preds = (torch.rand(len(indexes), generator=gen) * 8).round() / 8
    target = torch.randint(0, 2, (len(indexes),), generator=gen)
    first = torch.cumsum(sizes, 0) - sizes
    target[first], target[first + 1] = 1, 0
    reference = RetrievalAUROC(empty_target_action="skip")(preds, target, indexes)
    assert tmx.GroupedAUC()(preds, target, indexes).item() == pytest.approx(reference.item(), abs=1e-6)
    # single-class queries: left out here; RetrievalAUROC scores one without negatives 0 (and skips, here, the
    # one without positives)
    extra = torch.tensor([0.9, 0.4, 0.7, 0.2]), torch.tensor([1, 1, 0, 0]), torch.tensor([100, 100, 101, 101])
    preds, target, indexes = (torch.cat([a, b]) for a, b in zip((preds, target, indexes), extra))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchMetrics warns about the query without negatives
        theirs = RetrievalAUROC(empty_target_action="skip")(preds, target, indexes).item()
    per_query = reference.item() * 20  # the 20 queries holding both classes, then 0 for query 100
    assert theirs == pytest.approx(per_query / 21, abs=1e-6)
    assert tmx.GroupedAUC()(preds, target, indexes).item() == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_torchmetrics_ndcg_averages_ties_where_ours_ranks_the_relevant_candidates_last(seed):
    """The guide's "Ties": TorchMetrics' NDCG is scikit-learn's tie-averaged ``ndcg_score``, never below ours."""
    from sklearn.metrics import ndcg_score
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    from tests.helpers.ranking_reference import query_value, ranked_relevance

    preds, target, indexes = _retrieval_data(seed, graded=True, empty_queries=False)
    preds = (preds * 4).round() / 4 + 0.25  # ties, every score positive
    for k in (1, 3, None):
        theirs = RetrievalNormalizedDCG(top_k=k)(preds, target, indexes).item()
        averaged, pessimistic = [], []
        for q in indexes.unique():
            rows = indexes == q
            s, y = preds[rows].numpy(), target[rows].numpy().astype(np.float64)
            averaged.append(1.0 if len(s) == 1 else ndcg_score(y[None], s[None], k=k))
            pessimistic.append(query_value("ndcg", k, ranked_relevance(s, y), False, False))
        ours = tmx.NDCG(k=k)(preds, target, indexes=indexes).item()
        assert theirs == pytest.approx(np.mean(averaged), abs=1e-6), k
        assert ours == pytest.approx(np.mean(pessimistic), abs=1e-12), k
        assert ours < theirs - 1e-3, k  # this data's ties hold candidates of different relevance in the top k


@pytest.mark.parametrize("seed", SEEDS)
def test_which_torchmetrics_retrieval_metrics_cut_scores_at_or_below_zero(seed):
    """The guide's "Scores at or below zero": recall, precision, MRR and MAP cut them; NDCG, hit rate and
    R-precision rank them, and agree with ours."""
    import torchmetrics
    from packaging.version import Version
    from torchmetrics import retrieval as R

    if Version(torchmetrics.__version__) < Version("1.7.4"):
        pytest.skip("TorchMetrics ranks scores <= 0 before 1.7.4")
    preds, target, indexes = _retrieval_data(seed, graded=False, empty_queries=False, nonpositive=True)
    ranked = [
        (R.RetrievalNormalizedDCG(top_k=3), tmx.NDCG(k=3)),
        (R.RetrievalHitRate(top_k=3), tmx.HitRate(k=3)),
        (R.RetrievalRPrecision(), tmx.RPrecision()),
    ]
    cut = [
        (R.RetrievalRecall(top_k=3), tmx.RecallAtK(k=3)),
        (R.RetrievalPrecision(top_k=3), tmx.PrecisionAtK(k=3)),
        (R.RetrievalMRR(top_k=3), tmx.MRR(k=3)),
        (R.RetrievalMAP(), tmx.MAP()),
    ]
    for position, (reference, metric) in enumerate(ranked + cut):
        theirs = reference(preds, target, indexes).item()
        ours = metric(preds, target, indexes=indexes).item()
        shifted = reference(preds + 1.0, target, indexes).item()  # every score positive: the cut changes nothing
        assert ours == pytest.approx(shifted, abs=1e-6), type(reference).__name__
        if position < len(ranked):
            assert theirs == pytest.approx(ours, abs=1e-6), type(reference).__name__
        else:
            assert theirs < ours - 1e-3, type(reference).__name__


def test_torchmetrics_gives_zero_where_every_query_is_skipped_and_we_give_nan():
    from torchmetrics.retrieval import RetrievalNormalizedDCG

    preds, target, indexes = torch.rand(6), torch.zeros(6, dtype=torch.long), torch.arange(6) // 2
    assert RetrievalNormalizedDCG(empty_target_action="skip")(preds, target, indexes).item() == 0.0
    with pytest.warns(UndefinedMetricWarning, match="no query counted"):
        assert np.isnan(tmx.NDCG(empty_target_action="skip")(preds, target, indexes=indexes).item())


@pytest.mark.parametrize("seed", SEEDS)
def test_torchmetrics_macro_default_is_the_mean_of_per_class_recalls_not_ours(seed):
    """The guide's MulticlassRecallAtK row: TorchMetrics' default ``average="macro"`` is another number."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

    gen = torch.Generator().manual_seed(seed)
    scores, labels = torch.rand(300, 6, generator=gen), torch.randint(0, 6, (300,), generator=gen)
    labels[:100] = 0  # uneven classes, the largest one easy: micro and macro differ
    scores[labels == 0, 0] += 0.5
    k = 2
    hit = (torch.argsort(scores, dim=1, descending=True)[:, :k] == labels[:, None]).any(1).double().numpy()
    macro = np.mean([hit[labels.numpy() == c].mean() for c in range(6)])
    ours = tmx.MulticlassRecallAtK(num_classes=6, k=k)(scores, labels).item()
    assert ours == pytest.approx(hit.mean(), abs=1e-12)
    for reference in (MulticlassAccuracy(num_classes=6, top_k=k), MulticlassRecall(num_classes=6, top_k=k)):
        assert reference(scores, labels).item() == pytest.approx(macro, abs=1e-6)
    assert abs(ours - macro) > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_grouped_auc_with_from_logits_ranks_retrieval_scores_as_given(seed):
    """Retrieval scores outside [0, 1]: the guide's ``from_logits=True``. The exact AUC ranks the scores as given
    (scikit-learn's per-query AUC); ``RetrievalAUROC`` takes a float32 sigmoid first, which ties large logits."""
    from sklearn.metrics import roc_auc_score
    from torchmetrics.retrieval import RetrievalAUROC

    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 15, (20,), generator=gen)
    indexes = torch.repeat_interleave(torch.arange(20), sizes)
    logits = torch.randn(len(indexes), generator=gen)
    target = torch.randint(0, 2, (len(indexes),), generator=gen)
    first = torch.cumsum(sizes, 0) - sizes
    target[first], target[first + 1] = 1, 0
    with pytest.raises(ValueError, match="from_logits=True"):
        tmx.GroupedAUC()(logits, target, indexes)
    for scale in (1.0, 40.0):  # at 40, many logits saturate a float32 sigmoid to 0 or 1
        preds = logits * scale
        per_query = [roc_auc_score(target[indexes == q].numpy(), preds[indexes == q].numpy()) for q in range(20)]
        ours = tmx.GroupedAUC(from_logits=True)(preds, target, indexes).item()
        theirs = RetrievalAUROC(empty_target_action="skip")(preds, target, indexes).item()
        assert ours == pytest.approx(np.mean(per_query), abs=1e-12), scale
        if scale == 1.0:
            assert ours == pytest.approx(theirs, abs=1e-6)
        else:
            assert abs(ours - theirs) > 1e-3


# --- what the pages quote: argument names and defaults ---------------------------------------------------


def _namespaces() -> list[object]:
    spaces: list[object] = [tmx, tma, tmf]
    if importlib.util.find_spec("transformers") is not None:
        from torchmetrics_ext.integrations import huggingface

        spaces.append(huggingface)
    if importlib.util.find_spec("lightning") is not None:
        from torchmetrics_ext import demo

        spaces.append(demo)
    return spaces


def _quoted_calls(text: str) -> list[tuple[str, list[str]]]:
    """``(name, keywords)`` of each call written in the prose and tables' inline code, innermost first."""
    calls = []
    for code in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        while True:  # tuples first (`ks=(1, 5)`), then the innermost call
            code, tuples = re.subn(r"(?<![\w.)])\(([^()]*)\)", "_", code)
            if tuples:
                continue
            match = re.search(r"(?<![\w.])(?:tmx\.)?([A-Za-z_][\w.]*)\(([^()]*)\)", code)
            if match is None:
                break
            calls.append((match.group(1), re.findall(r"(?<![\w.])([a-z_]\w*)\s*=(?!=)", match.group(2))))
            code = code[: match.start()] + "_" + code[match.end() :]
    return calls


def _accepts(obj: object, keyword: str) -> bool:
    target = obj.__init__ if isinstance(obj, type) else obj
    parameters = inspect.signature(target).parameters
    if keyword in parameters:
        return True
    if isinstance(obj, type) and any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        if keyword not in _SAMPLE_VALUES:
            return False
        try:  # keywords that **kwargs passes on (ranking options, TorchMetrics' Metric options)
            obj(**{keyword: _SAMPLE_VALUES[keyword]}, **_REQUIRED.get(obj.__name__, {}))
        except (TypeError, ValueError):
            return False
        return True
    return False


_SAMPLE_VALUES = {"empty_target_action": "zero", "queries_complete_per_batch": True, "padding_value": -10.0}
_REQUIRED = {"RecallAtK": {"k": 3}, "PrecisionAtK": {"k": 3}, "HitRate": {"k": 3}, "F1AtK": {"k": 3}}


@pytest.mark.parametrize("guide", GUIDES)
def test_every_argument_a_guide_quotes_in_a_call_exists(guide):
    spaces = _namespaces()
    checked, missing = 0, []
    for name, keywords in _quoted_calls((ROOT / "docs" / guide).read_text()):
        head, *attributes = name.split(".")
        obj = next((getattr(space, head) for space in spaces if head in getattr(space, "__all__", ())), None)
        for attribute in attributes:
            obj = getattr(obj, attribute, None)
        if obj is None or not callable(obj):
            continue  # another library's call (TorchMetrics', TorchRec's) or prose
        for keyword in keywords:
            checked += 1
            if not _accepts(obj, keyword):
                missing.append(f"{name}({keyword}=...)")
    assert not missing, f"{guide} quotes arguments the code does not take: {missing}"
    assert checked


def test_ranking_options_of_the_torchmetrics_guides_arguments_table_are_taken():
    """`empty_target_action`, `queries_complete_per_batch`, `padding_value`, `validate_args`, `weights`, `mask`."""
    for cls, args in ((tmx.NDCG, {}), (tmx.MRR, {}), (tmx.MAP, {}), (tmx.RPrecision, {}), (tmx.RecallAtK, {"k": 2})):
        for action in ("zero", "one", "skip", "error"):
            cls(empty_target_action=action, **args)
        metric = cls(queries_complete_per_batch=True, padding_value=-10.0, validate_args=False, **args)
        assert {"indexes", "mask", "weights"} <= set(inspect.signature(metric.update).parameters)
    for cls in (tmx.NDCG, tmx.MRR, tmx.MAP):
        assert inspect.signature(cls.__init__).parameters["k"].default is None
    for cls in (tmx.RecallAtK, tmx.PrecisionAtK, tmx.HitRate, tmx.F1AtK):
        assert inspect.signature(cls.__init__).parameters["k"].default is inspect.Parameter.empty
    assert tmx.NDCG().validate_args is True


def test_defaults_the_guides_state_are_the_codes():
    defaults = [
        (tma.Distribution, "percentiles", (5, 50, 95)),
        (tma.Distribution, "relative_accuracy", 0.01),
        (tma.MetricsAggregator, "process_group", None),
        (tma.MetricsAggregator.get_metrics_for_logging, "prefix", "train"),
        (tmx.HindsightTargetPR, "num_thresholds", 1000),
        (tmx.GroupedAUC, "average_groups", "defined"),
        (tmx.GroupedAUC, "groups_complete_per_batch", False),
        (tmx.LogLoss, "unit", "nats"),
        (tmx.AUPRC, "num_bins", None),
        (tmx.NDCG, "exponential_gain", False),
        (tmx.NDCG, "report_as_loss", False),
        (tmx.CalibrationFreeNE, "torchrec_scaling", False),
        (tmx.WeightedNMSE, "baseline", "one"),
        (tmx.SessionPrecisionAtK, "average", "session"),
        (tmx.RecMetricModule, "throughput", True),
        (tmx.RecMetricModule, "compute_interval_steps", 100),  # what RecMetricCallback logs at
    ]
    if importlib.util.find_spec("transformers") is not None:
        from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics

        defaults += [
            (ranking_compute_metrics, "padding_value", (-10.0, -100.0)),
            (ranking_compute_metrics, "ks", (1, 4, 5, 10, 20, 50, 100)),
            (ranking_compute_metrics, "metrics", ("recall", "mrr")),
            (pointwise_compute_metrics, "from_logits", True),
            (pointwise_compute_metrics, "ignore_index", None),
        ]
    wrong = []
    for obj, name, documented in defaults:
        parameters = inspect.signature(obj.__init__ if isinstance(obj, type) else obj).parameters
        default = parameters[name].default
        same = tuple(default) == tuple(documented) if isinstance(documented, tuple) else default == documented
        if not same:
            wrong.append(f"{getattr(obj, '__qualname__', obj)}({name}={default!r}), the guides say {documented!r}")
    assert not wrong, wrong


# --- torchtune's aggregator (migration_torchtune.md): the same keys and values -----------------------------


def _torchtune_reference(records: list, prefix: str, bounds: dict) -> dict[str, float]:
    """torchtune's single-process result, written from its README and handlers' description."""
    grouped: dict[tuple[str, str], list] = {}
    kinds = {}
    for record in records:
        grouped.setdefault((record.dataset_name, record.name), []).append(record.value)
        kinds[(record.dataset_name, record.name)] = record.agg_type
    A = tma.AggregationType
    out: dict[str, float] = {}
    for (dataset, name), values in grouped.items():
        key, kind = f"{prefix}_{dataset}/{name}", kinds[(dataset, name)]
        if kind in (A.SUM, A.MEAN, A.MAX, A.MIN):
            reduce = {A.SUM: np.sum, A.MEAN: np.mean, A.MAX: np.max, A.MIN: np.min}[kind]
            out[key] = float(reduce(values))
        elif kind == A.DISTRIBUTION:
            v = np.asarray(values, dtype=float)
            out |= {f"{key}_stat_mean": v.mean(), f"{key}_stat_min": v.min(), f"{key}_stat_max": v.max()}
            out |= {f"{key}_stat_p{q:02d}": float(np.quantile(v, q / 100)) for q in (5, 50, 95)}
            for q in (5, 50, 95):  # the order statistics either side of torchtune's interpolated percentile
                bounds[f"{key}_stat_p{q:02d}"] = (
                    np.quantile(v, q / 100, method="lower"),
                    np.quantile(v, q / 100, method="higher"),
                )
            if len(v) > 1:
                out[f"{key}_stat_std"] = v.std(ddof=1)
        else:
            for category in set(values):
                out[f"{key}_count_{category}"] = float(values.count(category))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_the_aggregator_logs_torchtunes_keys_and_values(seed):
    rng = np.random.default_rng(seed)
    A = tma.AggregationType
    names = {A.SUM: "tokens", A.MEAN: "loss", A.MAX: "longest", A.MIN: "shortest"}
    names |= {A.DISTRIBUTION: "seq_len", A.CATEGORICAL_COUNT: "source"}
    records = []
    for _ in range(400):
        kind = list(A)[rng.integers(len(A))]
        dataset = ("alpaca", "slim")[rng.integers(2)]
        if kind == A.CATEGORICAL_COUNT:
            value: object = ("web", "book", "code")[rng.integers(3)]
        else:
            value = int(rng.integers(1, 500)) if rng.random() < 0.5 else float(rng.uniform(0, 10))
        records.append(tma.Metric(dataset, names[kind], value, kind))
    records.append(tma.Metric("single", "seq_len", 7, A.DISTRIBUTION))  # one value: no std key
    aggregator = tma.MetricsAggregator()
    for start in range(0, len(records), 37):
        aggregator.update(records[start : start + 37])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = aggregator.get_metrics_for_logging(prefix="val")
    bounds: dict[str, tuple[float, float]] = {}
    expected = _torchtune_reference(records, "val", bounds)
    assert sorted(logged) == sorted(expected)
    for key, value in expected.items():
        if re.search(r"_stat_p\d+$", key):  # the sketch: within 1% of a value at that rank (relative_accuracy)
            low, high = bounds[key]
            assert low * 0.99 <= logged[key] <= high * 1.01, (key, logged[key], low, high)
        else:
            assert logged[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    transform = tma.DefaultTrainingMetricTransform()
    transform.set_dataset_name("alpaca")
    produced = transform({"tokens": [1, 2, 3, 4, 5]})["metrics"]
    assert [(m.name, m.value, m.agg_type) for m in produced] == [
        ("samples_seen", 1, A.SUM),
        ("tokens_seen", 5, A.SUM),
        ("seq_len", 5, A.DISTRIBUTION),
    ]


# --- TorchRec (migration_torchrec.md) ----------------------------------------------------------------------


def test_a_torchrec_config_with_a_click_and_a_regression_task_builds_and_runs():
    """The guide said such a config (`auc` on task 0, `mse` on task 1) is refused at the first step, every metric
    reading every task; each metric reads the tasks its RecMetricDef names, and only a metric listing both is."""
    from sklearn.metrics import mean_squared_error, roc_auc_score

    gen = torch.Generator().manual_seed(0)
    click = (torch.rand(64, generator=gen) < 0.3).double()
    click_pred = torch.rand(64, generator=gen, dtype=torch.float64)
    watch = 60 * torch.rand(64, generator=gen, dtype=torch.float64)
    watch_pred = watch + torch.randn(64, generator=gen, dtype=torch.float64)
    batch = {"cl": click, "cp": click_pred, "wl": watch, "wp": watch_pred, "w": torch.ones(64)}
    tasks = [
        {"name": "click", "label_name": "cl", "prediction_name": "cp", "weight_name": "w"},
        {"name": "watch", "label_name": "wl", "prediction_name": "wp", "weight_name": "w"},
    ]
    config = {"rec_tasks": tasks, "rec_metrics": {"auc": {"rec_task_indices": [0]}, "mse": {"rec_task_indices": [1]}}}
    module = tmx.RecMetricModule.from_torchrec_config(config)
    module.update(batch)
    values = module.compute()
    assert values["auc-click|window_auc"].item() == pytest.approx(roc_auc_score(click, click_pred), abs=1e-12)
    assert values["mse-watch|lifetime_mse"].item() == pytest.approx(mean_squared_error(watch, watch_pred), rel=1e-12)
    assert not [key for key in values if key.startswith("auc-watch") or key.startswith("mse-click")]
    config["rec_metrics"]["auc"] = {"rec_task_indices": [0, 1]}
    both = tmx.RecMetricModule.from_torchrec_config(config)
    with pytest.raises(ValueError, match=r"(?s)Task 'watch'.*\['auc'\]"):
        both.update(batch)


@pytest.mark.parametrize("seed", SEEDS)
def test_torcheval_hit_rate_and_reciprocal_rank_rows_of_the_guide(seed):
    """torcheval's per-sample formulas (written out in numpy: rank = classes scored strictly higher): the guide's
    MulticlassRecallAtK and MRR over one-hot padded rows give their mean on tie-free scores; ties count against."""
    gen = torch.Generator().manual_seed(seed)
    scores, labels = torch.randn(150, 6, generator=gen), torch.randint(0, 6, (150,), generator=gen)
    relevance = torch.nn.functional.one_hot(labels, 6)
    for tied in (False, True):
        s = (scores * 2).round() / 2 if tied else scores
        x = s.numpy()
        above = (x > x[np.arange(150), labels.numpy()][:, None]).sum(1)  # torcheval's rank (0-based)
        for k in (1, 3, None):
            rr = np.where(above < (k or 6), 1.0 / (above + 1), 0.0)
            hit = (above < (k or 6)).astype(float)
            ours_rr = tmx.MRR(k=k)(s, relevance).item()
            ours_hit = tmx.MulticlassRecallAtK(num_classes=6, k=k or 6)(s, labels).item()
            if tied:
                assert ours_rr < rr.mean() and (k == 6 or k is None or ours_hit < hit.mean())
            else:
                assert ours_rr == pytest.approx(rr.mean(), abs=1e-12)
                assert ours_hit == pytest.approx(hit.mean(), abs=1e-12)
