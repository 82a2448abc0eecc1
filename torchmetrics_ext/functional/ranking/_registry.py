r"""Every ranking metric's spec, by name: its per-query value on each computation path.

Notation of the value functions: for query :math:`q` with relevant set :math:`R_q` (the
candidates with ``target > 0``), ``hits(k)`` counts the relevant candidates ranked in the top
``k``; a query without relevant candidates may get any value (the caller's
``empty_target_action`` replaces it). The hit-count metrics (recall, precision, hit rate, F1)
are written once against :class:`~torchmetrics_ext.functional.ranking._kernel.QueryStats`, which
both the sort path and the top-k merge provide; MRR, MAP and NDCG read each path's own layout.

Adding a metric: write its value function(s), add a :class:`RankingSpec` to :data:`SPECS`,
then a function in :mod:`~torchmetrics_ext.functional.ranking.single` and a class in
:mod:`torchmetrics_ext.metrics.ranking.single` (``docs/contributing.md`` walks through it).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor

from torchmetrics_ext.functional.ranking._first_hit import FirstHits
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.functional.ranking._kernel import QueryStats, SortedQueries, discount_column, gain
from torchmetrics_ext.functional.ranking._spec import RankingSpec, Request
from torchmetrics_ext.functional.ranking._topk import TopQueries
from torchmetrics_ext.utilities.checks import as_int, as_str, refuse_repeats, sequence_items, whole_float
from torchmetrics_ext.utilities.errors import refusal

# ----------------------------------------------------------------------------- hit counts (sort path and top-k merge)


def _recall(queries: QueryStats, k: int | None) -> Tensor:
    return queries.hits(k) / queries.safe_rel


def _precision(queries: QueryStats, k: int | None) -> Tensor:
    return queries.hits(k) / queries.precision_denominator(k)


def _hit_rate(queries: QueryStats, k: int | None) -> Tensor:
    return (queries.hits(k) > 0).to(torch.float64)


def _f1(queries: QueryStats, k: int | None) -> Tensor:
    # 2 P R / (P + R) with P = hits / d_k and R = hits / |R_q| is 2 hits / (d_k + |R_q|): 0 when hits = 0
    return 2.0 * queries.hits(k) / (queries.precision_denominator(k) + queries.num_rel)


def _r_precision(queries: SortedQueries, k: int | None) -> Tensor:
    # the cutoff of query q is |R_q|: relevant rows ranked above it over |R_q|
    within_r = queries.pos < queries.num_rel[queries.group]
    return queries.sum(None, within_r) / queries.safe_rel


# ----------------------------------------------------------------------------- MRR


def _mrr_sorted(queries: SortedQueries, k: int | None) -> Tensor:
    first = queries.within == 0
    in_k = queries.in_k(k)
    keep = first if in_k is None else first & in_k
    # at most one row per query: the sum is that row's reciprocal rank (no boolean indexing: no host read)
    return queries.sum((queries.pos + 1).to(torch.float64).reciprocal_(), keep)


def _mrr_top(queries: TopQueries, k: int) -> Tensor:
    first = queries.first_hit  # found once for every cutoff
    return torch.where(first < queries.depth(k), (first + 1).to(torch.float64).reciprocal(), 0.0)


def _mrr_first_hit(hits: FirstHits, k: int | None) -> Tensor:
    return torch.where(hits.hit(k), hits.reciprocal_rank, 0.0)


def _hit_rate_first_hit(hits: FirstHits, k: int | None) -> Tensor:
    return hits.hit(k).to(torch.float64)


# ----------------------------------------------------------------------------- MAP


def _map_sorted(queries: SortedQueries, k: int | None) -> Tensor:
    precision = (queries.within + 1).to(torch.float64) / (queries.pos + 1).to(torch.float64)
    return queries.sum(precision, queries.in_k(k)) / queries.safe_rel


def _map_top(queries: TopQueries, k: int) -> Tensor:
    def precision_at_hits() -> Tensor:
        relevant = queries.relevant
        return torch.cumsum(relevant, 0, dtype=torch.int32).to(torch.float64) / queries.ranks * relevant

    return queries.prefix("map", precision_at_hits)[queries.depth(k) - 1] / queries.safe_rel


# ----------------------------------------------------------------------------- NDCG


def _normalise(dcg: Tensor, idcg: Tensor) -> Tensor:
    return dcg / torch.where(idcg > 0, idcg, 1.0)


def _ndcg_sorted(queries: SortedQueries, k: int | None) -> Tensor:
    return _normalise(queries.sum(queries.gain_discount, queries.in_k(k)), queries.ideal_dcg(k))


def _ndcg_top(queries: TopQueries, k: int) -> Tensor:
    def gain_discount() -> Tensor:
        gains = gain(queries.grade.to(torch.float64), queries.options.exponential_gain)
        return gains * discount_column(gains.shape[0], gains.device)

    return _normalise(queries.prefix("dcg", gain_discount)[queries.depth(k) - 1], queries.ideal_dcg(k))


# ----------------------------------------------------------------------------- the registry

NDCG = RankingSpec(
    "ndcg",
    "NDCG",
    "optional",
    _ndcg_sorted,
    _ndcg_top,
    counts_grades=True,
    options=("exponential_gain", "report_as_loss"),
)
RECALL = RankingSpec("recall", "RecallAtK", "required", _recall, _recall)
PRECISION = RankingSpec("precision", "PrecisionAtK", "required", _precision, _precision, options=("adaptive_k",))
MRR = RankingSpec("mrr", "MRR", "optional", _mrr_sorted, _mrr_top, _mrr_first_hit)
HIT_RATE = RankingSpec("hit_rate", "HitRate", "required", _hit_rate, _hit_rate, _hit_rate_first_hit)
MAP = RankingSpec("map", "MAP", "optional", _map_sorted, _map_top)
R_PRECISION = RankingSpec("r_precision", "RPrecision", "none", _r_precision)
F1 = RankingSpec("f1", "F1AtK", "required", _f1, _f1, options=("adaptive_k",))

SPECS: dict[str, RankingSpec] = {
    spec.name: spec for spec in (NDCG, RECALL, PRECISION, MRR, HIT_RATE, MAP, R_PRECISION, F1)
}
"""Every ranking metric by name; :class:`RankingMetrics` and :func:`ranking_metrics` accept each."""

DEFAULT_METRICS = ("ndcg", "recall", "precision", "mrr", "hit_rate", "map")
"""``RankingMetrics``' default ``metrics``: kept fixed, so a new metric never changes an existing output."""


def ranking_spec(name: object) -> RankingSpec:
    """The spec registered as ``name``; ``ValueError`` listing every known name otherwise."""
    text = as_str(name)  # a NumPy string (0-dim array too) is its Python string
    spec = None if text is None else SPECS.get(text)
    if spec is None:
        hint = "" if text is None else _closest_name(text)
        raise refusal(f"Expected `metrics` entries from {tuple(SPECS)}, got {name!r}{hint}.", wrong_type=text is None)
    return spec


# other libraries' names for these metrics (TorchMetrics' classes without `Retrieval`, torcheval's, ranx's,
# papers'), written without separators or case: what such a name suggests before any spelling guess (by
# spelling, "average_precision" is nearest to "r_precision" and "reciprocal_rank" to none)
_OTHER_NAMES = {
    **dict.fromkeys(("normalizeddcg", "dcg"), "ndcg"),
    **dict.fromkeys(("reciprocalrank", "meanreciprocalrank"), "mrr"),
    **dict.fromkeys(("averageprecision", "meanaverageprecision"), "map"),
    **dict.fromkeys(("hit", "hits", "hr", "hitratio", "hitrate"), "hit_rate"),
    **dict.fromkeys(("rprecision", "rprec"), "r_precision"),
    **dict.fromkeys(("f1score", "fscore", "f1"), "f1"),
}


def _closest_name(text: str) -> str:
    """`` (did you mean 'ndcg'?)`` for the name ``text`` most likely meant, or ``""`` (the error path only).

    Names as other libraries and the Hugging Face adapter's keys write them (``"NDCG"``, ``"Recall@10"``,
    ``"hit-rate"``, ``"RetrievalMRR"``, ``"recall_at_k"``, ``"reciprocal_rank"``) are this registry's but for
    case, separators, a prefix or suffix and a cutoff, which goes in ``ks``.
    """
    base, at, cutoff = text.strip().casefold().replace("-", "_").partition("@")
    squashed = "".join(c for c in base if c.isalnum()).removeprefix("retrieval").removesuffix("atk")
    known = _OTHER_NAMES.get(squashed) or next((name for name in SPECS if name.replace("_", "") == squashed), None)
    guess = [known] if known else difflib.get_close_matches(base, list(SPECS), n=1, cutoff=0.75)
    if not guess:
        return ""
    where = f"; the cutoff {cutoff} goes in `ks`" if at and cutoff.isdigit() else ""
    return f" (did you mean {guess[0]!r}?{where})"


def ranking_requests(metrics: Sequence[str], ks: Sequence[int | None]) -> list[Request]:
    """Validate ``metrics`` and ``ks`` and return every ``(spec, k)`` request, metric by metric.

    A value given twice in either (``ks=(10, 5, 10)``, ``metrics=("ndcg", "ndcg")``) is refused: it
    would name a key twice, so it is most likely a typo for another value.

    A metric without cutoff (R-precision) gives one request whatever ``ks`` holds. ``None`` in
    ``ks`` is the whole list for every metric with a cutoff (recall is then 1, precision
    ``|R_q| / n_q``).
    """
    # any sequence, a 1-D array or tensor of names too (sequence_items); one name is no sequence
    names = sequence_items("metrics", metrics) or []
    if not names:
        # one name as a bare string (or a 0-dim NumPy string) is a sequence of letters: say how to write it
        text = as_str(metrics)
        hint = f" (a sequence of them: metrics=({text!r},))" if text else ""
        raise refusal(
            f"Expected `metrics` to be a non-empty sequence of names from {tuple(SPECS)}, got {metrics!r}{hint}.",
            wrong_type=sequence_items("metrics", metrics) is None,
        )
    specs = [ranking_spec(name) for name in names]
    refuse_repeats("metrics", metrics, [spec.name for spec in specs])
    # a 0-dim tensor or array is one cutoff, as a bare int: no sequence (sequence_items)
    one = as_int(ks)
    given = sequence_items("ks", ks) or []
    if not given:
        # `None` is a cutoff (the whole list) inside the sequence, not a value of `ks` itself
        whole = whole_float(ks)
        hint = (
            " (for the whole list alone write ks=(None,))"
            if ks is None
            else f" (write ks=({one},))"
            if one is not None
            else f" (a float: write ks=({whole},))"
            if whole is not None
            else ""
        )
        raise refusal(
            f"Expected `ks` to be a non-empty sequence of cutoffs, each a positive integer or None for the whole "
            f"list, got {ks!r}{hint}.",
            wrong_type=sequence_items("ks", ks) is None,
        )
    try:
        cutoffs = [check_cutoff(k, "optional") for k in given]
    except ValueError as error:  # which setting: `k` is each of its items
        raise refusal(
            f"{str(error).rstrip('.')}, an item of `ks` ({ks!r}).", wrong_type=isinstance(error, TypeError)
        ) from None
    refuse_repeats("ks", ks, cutoffs)
    return [(spec, k) for spec in specs for k in ([None] if spec.cutoff == "none" else cutoffs)]
