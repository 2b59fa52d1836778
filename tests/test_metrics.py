"""recnb.rank.metrics: (a) cases whose right answer is written down by hand, (b) agreement with ranx, an independent
implementation, on real BM25 rankings of the Home Depot test queries, per query and on average."""
import time
from math import isclose, log2

import numpy as np
import pytest

from recnb.rank.metrics import (average_precision_at_k, evaluate, hit_rate_at_k, metric_table, mrr_at_k, ndcg_at_k,
                           parse_metric, recall_at_k)


# (a) hand-computed ------------------------------------------------------------------------------------------------

GAINS = {"a": 3, "b": 2, "c": 1, "z": 0}   # z judged irrelevant


def test_ndcg_hand_computed_linear_and_exponential():
    # reversed ideal order: DCG@3 = 1/1 + 2/log2(3) + 3/2 ; IDCG@3 = 3/1 + 2/log2(3) + 1/2
    assert isclose(ndcg_at_k(["c", "b", "a"], GAINS, k=3), (1 + 2 / log2(3) + 1.5) / (3 + 2 / log2(3) + 0.5))
    # exponential: grades 7, 3, 1
    assert isclose(ndcg_at_k(["c", "b", "a"], GAINS, k=3, gain="exponential"),
                   (1 + 3 / log2(3) + 7 / 2) / (7 + 3 / log2(3) + 1 / 2))
    assert ndcg_at_k(["a", "b", "c"], GAINS, k=3) == 1.0
    # an unjudged item and a judged-irrelevant one both have gain 0
    assert isclose(ndcg_at_k(["x", "z", "a"], GAINS, k=3), (3 / 2) / (3 + 2 / log2(3) + 0.5))


def test_ndcg_ideal_uses_all_judged_items_not_only_retrieved():
    # only `b` retrieved: IDCG@2 still assumes a, b could have been ranked: 3 + 2/log2(3)
    assert isclose(ndcg_at_k(["b"], GAINS, k=2), 2 / (3 + 2 / log2(3)))


def test_ties_in_gain_do_not_change_ndcg():
    tied = {"a": 1, "b": 1, "c": 2}
    assert ndcg_at_k(["c", "a", "b"], tied, k=3) == ndcg_at_k(["c", "b", "a"], tied, k=3) == 1.0
    assert isclose(ndcg_at_k(["a", "c"], tied, k=2), ndcg_at_k(["b", "c"], tied, k=2))


def test_empty_ranking_and_nothing_relevant_score_zero():
    for f in (recall_at_k, mrr_at_k, hit_rate_at_k, average_precision_at_k):
        assert f([], {"a"}) == 0.0 and f(["a", "b"], set()) == 0.0 and f(["a"], {"a": 0.0}) == 0.0
    assert ndcg_at_k([], GAINS) == 0.0 and ndcg_at_k(["a"], {}) == 0.0 and ndcg_at_k(["a"], {"a": 0}) == 0.0


def test_k_larger_than_ranking_is_not_padded():
    ranked = ["b", "x"]
    assert isclose(ndcg_at_k(ranked, GAINS, k=100), 2 / (3 + 2 / log2(3) + 0.5))
    assert recall_at_k(ranked, GAINS, k=100) == 1 / 3
    assert mrr_at_k(["x", "b"], GAINS, k=100) == 0.5
    assert isclose(average_precision_at_k(["x", "b"], GAINS, k=100), 0.5 / 3)


def test_map_divides_by_all_relevant_items_like_ranx():
    # 4 relevant, both of the first 2 are relevant: AP@2 = (1 + 1) / 4, not (1 + 1) / min(4, 2)
    assert average_precision_at_k(["a", "b", "c", "d"], {"a", "b", "c", "d"}, k=2) == 0.5
    assert isclose(average_precision_at_k(["x", "a", "y", "b"], {"a", "b"}, k=4), (1 / 2 + 2 / 4) / 2)


def test_min_gain_threshold_and_sets():
    assert recall_at_k(["c", "b"], GAINS, k=2) == 2 / 3                 # gain > 0
    assert recall_at_k(["c", "b"], GAINS, k=2, min_gain=1) == 1 / 2     # only a, b have gain > 1
    assert mrr_at_k(["c", "b"], GAINS, k=2, min_gain=1) == 1 / 2
    assert hit_rate_at_k(["c"], GAINS, k=1, min_gain=1) == 0.0
    assert recall_at_k(["c", "b"], {"c", "b", "q"}, k=2) == 2 / 3        # a set: every member is relevant


def test_duplicates_are_refused():
    with pytest.raises(ValueError, match=r"'a' twice \(ranks 1 and 3\)"):
        ndcg_at_k(["a", "b", "a"], GAINS)
    with pytest.raises(ValueError, match="'q1'.*'b' twice"):
        evaluate({"q1": ["b", "b"]}, {"q1": GAINS})
    # a duplicate below the cut-off is still a broken ranking
    with pytest.raises(ValueError, match="twice"):
        recall_at_k(["a", "b", "c", "b"], {"a"}, k=1)


def test_bad_input_is_refused():
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            recall_at_k(["a"], {"a"}, k=k)
    with pytest.raises(TypeError, match="list of item ids"):
        ndcg_at_k("abc", GAINS)
    with pytest.raises(TypeError, match="list of item ids"):
        evaluate({"q1": {"a": 1.0}}, {"q1": GAINS})
    with pytest.raises(ValueError, match="gain must be one of"):
        ndcg_at_k(["a"], GAINS, gain="log")
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k(["a"], {"a": 1, "b": -1})
    with pytest.raises(ValueError, match="no query in qrels"):
        evaluate({"q1": ["a"]}, {"q1": {"a": 0}})


def test_metric_names():
    assert parse_metric("hit@5") == parse_metric("hit_rate@5") == ("hit_rate", 5)
    assert parse_metric("map@10") == ("map", 10)
    for bad in ("precision@10", "ndcg", "ndcg@0", "NDCG@10", "ndcg@ten"):
        with pytest.raises(ValueError, match=r"known metrics are ndcg@k, recall@k, mrr@k, hit_rate@k"):
            evaluate({"q": ["a"]}, {"q": {"a": 1}}, [bad])


def test_evaluate_query_set_and_means_by_hand():
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}, "q3": {"d": 0}, "q4": {"e": 1}}
    run = {"q1": ["b", "a"], "q2": ["x", "c"], "q3": ["d"], "q5": ["a"]}  # q4 missing, q3 unjudged, q5 unknown
    got = evaluate(run, qrels, ["ndcg@2", "recall@1", "mrr@2", "hit@1", "hit_rate@2", "map@2"])
    ndcg_q1 = (1 + 2 / log2(3)) / (2 + 1 / log2(3))
    ndcg_q2 = (1 / log2(3)) / 1
    assert isclose(got["ndcg@2"], (ndcg_q1 + ndcg_q2 + 0) / 3)
    assert isclose(got["recall@1"], (1 / 2 + 0 + 0) / 3)
    assert isclose(got["mrr@2"], (1 + 1 / 2 + 0) / 3)
    assert isclose(got["hit@1"], 1 / 3) and isclose(got["hit_rate@2"], 2 / 3)
    assert isclose(got["map@2"], ((1 + 1) / 2 + (1 / 2) / 1 + 0) / 3)
    table = evaluate(run, qrels, ["ndcg@2", "mrr@2"], per_query=True)
    assert table.index.name == "query_id" and table.index.tolist() == ["q1", "q2", "q4"]
    assert table.columns.tolist() == ["ndcg@2", "mrr@2"]
    assert isclose(table.loc["q2", "ndcg@2"], ndcg_q2) and table.loc["q4"].eq(0).all()


def test_metric_table_layout():
    table = metric_table({"bm25": {"ndcg@10": 0.123456, "mrr@10": 0.5}, "dense": {"mrr@10": 0.25, "recall@100": 1 / 3}})
    assert table.index.tolist() == ["bm25", "dense"] and table.columns.tolist() == ["ndcg@10", "mrr@10", "recall@100"]
    assert table.loc["bm25", "ndcg@10"] == 0.1235 and table.loc["dense", "recall@100"] == 0.3333
    assert np.isnan(table.loc["dense", "ndcg@10"])


def test_evaluate_is_fast():
    rng = np.random.default_rng(0)
    items = [f"i{n}" for n in range(20_000)]
    qrels = {f"q{q}": {items[i]: float(rng.integers(0, 3)) + 1 for i in rng.choice(20_000, 15, replace=False)}
             for q in range(5_000)}
    run = {q: [items[i] for i in rng.choice(20_000, 100, replace=False)] for q in qrels}
    for q in list(qrels)[::2]:   # half the queries find some of their judged items first
        found = list(qrels[q])[:5]
        run[q] = found + [i for i in run[q] if i not in qrels[q]][:95]
    metrics = ["ndcg@10", "ndcg@100", "recall@10", "recall@100", "mrr@10", "hit_rate@10", "map@10"]
    seconds = []
    for _ in range(3):
        start = time.perf_counter(); means = evaluate(run, qrels, metrics); seconds.append(time.perf_counter() - start)
    print(f"evaluate: 5,000 queries x 100 ranks x {len(metrics)} metrics, median {np.median(seconds):.3f} s")
    assert 0 < means["ndcg@10"] < 1
    assert np.median(seconds) < 2.0


# (b) cross-check with ranx on real BM25 rankings --------------------------------------------------------------------

RANX_METRICS = {  # ours -> ranx's name; ranx "ndcg" is Järvelin's linear gain, "ndcg_burges" is 2**rel - 1
    ("ndcg@10", "linear"): "ndcg@10", ("ndcg@100", "linear"): "ndcg@100",
    ("ndcg@10", "exponential"): "ndcg_burges@10",
    ("recall@10", "linear"): "recall@10", ("recall@100", "linear"): "recall@100",
    ("mrr@10", "linear"): "mrr@10", ("hit_rate@10", "linear"): "hit_rate@10",
    ("map@10", "linear"): "map@10", ("map@100", "linear"): "map@100",
}


@pytest.fixture(scope="module")
def bm25_test_run(homedepot):
    "BM25 (bm25s) top-100 over the whole Home Depot catalog for its test queries; items with score 0 left out."
    import bm25s
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(homedepot.catalog.texts(), stopwords="en", show_progress=False), show_progress=False)
    queries = homedepot.queries_in("test")
    tokens = bm25s.tokenize(queries["query"].tolist(), stopwords="en", return_ids=False, show_progress=False)
    docs, scores = retriever.retrieve(tokens, k=100, show_progress=False, n_threads=0)
    ids = np.array(homedepot.catalog.ids, dtype=object)
    return {q: ids[d[s > 0]].tolist() for q, d, s in zip(queries["query_id"], docs, scores)}


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaTypeSafetyWarning")  # ranx hashes ids to uint64
def test_agrees_with_ranx_on_homedepot_bm25(homedepot, bm25_test_run):
    from ranx import Qrels, Run, evaluate as ranx_evaluate
    run = bm25_test_run
    # Home Depot gains are relevance - 1 in thirds (0.33, 0.67, ...; a few quarters); ranx takes integer relevance,
    # so both libraries get the same integer grades round(3 * gain) in 1..6. Every positive gain stays positive.
    qrels = {q: {i: int(round(3 * g)) for i, g in gains.items()} for q, gains in homedepot.qrels("test").items()}
    assert len(qrels) > 1000 and all(min(g.values()) >= 1 for g in qrels.values())
    assert sum(len(r) for r in run.values()) > 50 * len(run)           # real, mostly full rankings
    # ranx orders a run by score; BM25 scores tie often, so give it scores that keep our order exactly
    ranx_run = Run({q: {item: float(len(r) - rank) for rank, item in enumerate(r)} for q, r in run.items()
                    if q in qrels and r})
    ranx_means = ranx_evaluate(Qrels(qrels), ranx_run, sorted(set(RANX_METRICS.values())), make_comparable=True)
    for (ours_name, gain), ranx_name in RANX_METRICS.items():
        ours = evaluate(run, qrels, [ours_name], gain=gain, per_query=True)[ours_name]
        theirs = ours.index.map(lambda q: ranx_run.scores[ranx_name].get(q, 0.0)).to_numpy(dtype=float)
        assert set(ranx_run.scores[ranx_name]) == set(ours.index)
        worst = np.abs(ours.to_numpy() - theirs).max()
        print(f"{ours_name:12s} {gain:11s} recnb {ours.mean():.6f}  ranx {ranx_name:15s} {ranx_means[ranx_name]:.6f}"
              f"  max per-query diff {worst:.1e}")
        assert worst < 1e-6, (ours_name, gain)
        assert abs(ours.mean() - ranx_means[ranx_name]) < 1e-6, (ours_name, gain)
        assert ours.std() > 0.05   # the comparison is not between constants
    # linear NDCG is scale invariant: the grades divided by 3 (the original thirds) give the same numbers
    thirds = {q: {i: g / 3 for i, g in gains.items()} for q, gains in qrels.items()}
    for name in ("ndcg@10", "ndcg@100"):
        assert abs(evaluate(run, thirds, [name])[name] - ranx_means[name]) < 1e-12
