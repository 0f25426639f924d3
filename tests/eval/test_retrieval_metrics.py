"""Retrieval metrics against pytrec_eval (trec_eval's C implementation) on random runs."""

import numpy as np
import pytest

from jaxmm.eval import retrieval_metrics as rm

pytrec_eval = pytest.importorskip("pytrec_eval")


def _random_run_and_qrels(seed, n_q=25, n_docs=40, ties=False):
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for q in range(n_q):
        qid = f"q{q}"
        docs = rng.choice(n_docs, size=rng.integers(5, 30), replace=False)
        scores = rng.normal(size=len(docs))
        if ties:  # coarse scores force ties, exercising the tie-break order
            scores = np.round(scores, 0)
        run[qid] = {f"d{d}": float(s) for d, s in zip(docs, scores, strict=True)}
        judged = rng.choice(n_docs, size=rng.integers(1, 12), replace=False)
        rels = rng.integers(0, 4, size=len(judged))
        rels[0] = max(rels[0], 1)  # at least one relevant doc
        qrels[qid] = {f"d{d}": int(r) for d, r in zip(judged, rels, strict=True)}
    return run, qrels


def _trec(run, qrels, measures):
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_recall_map_match_pytrec_eval(k, ties):
    run, qrels = _random_run_and_qrels(seed=k + 100 * ties, ties=ties)
    want = _trec(run, qrels, {f"ndcg_cut.{k}", f"recall.{k}", "map"})
    got = rm.per_query(run, qrels, [f"ndcg@{k}", f"recall@{k}", "map"])
    for qid, trec in want.items():
        # trec_eval computes in double precision; 1e-9 leaves room for summation order only.
        assert got[f"ndcg@{k}"][qid] == pytest.approx(trec[f"ndcg_cut_{k}"], abs=1e-9)
        assert got[f"recall@{k}"][qid] == pytest.approx(trec[f"recall_{k}"], abs=1e-9)
        assert got["map"][qid] == pytest.approx(trec["map"], abs=1e-9)


@pytest.mark.parametrize("ties", [False, True])
def test_mrr_at_k_matches_pytrec_eval_on_cut_run(ties):
    k = 5
    run, qrels = _random_run_and_qrels(seed=7, ties=ties)
    # trec_eval's recip_rank has no cutoff: cut the run to its top k (trec_eval order) first.
    cut = {q: {d: run[q][d] for d in rm.rank(run[q])[:k]} for q in run}
    want = _trec(cut, qrels, {"recip_rank"})
    got = rm.per_query(run, qrels, [f"mrr@{k}"])[f"mrr@{k}"]
    for qid, trec in want.items():
        assert got[qid] == pytest.approx(trec["recip_rank"], abs=1e-9)


def test_evaluate_means_and_missing_queries():
    run, qrels = _random_run_and_qrels(seed=3, n_q=6)
    table = rm.per_query(run, qrels, ["ndcg@10"])["ndcg@10"]
    assert rm.evaluate(run, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(sum(table.values()) / 6)
    partial = {q: v for q, v in run.items() if q != "q0"}
    assert rm.evaluate(partial, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(
        (sum(table.values()) - table["q0"]) / 6
    )


def test_perfect_and_empty_rankings():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    perfect = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    assert rm.evaluate(perfect, qrels, ["ndcg@10", "recall@2", "mrr@1", "map"]) == {
        "ndcg@10": 1.0, "recall@2": 1.0, "mrr@1": 1.0, "map": 1.0,
    }  # fmt: skip
    assert rm.evaluate({}, qrels, ["ndcg@10"]) == {"ndcg@10": 0.0}
    with pytest.raises(ValueError, match="unknown metric"):
        rm.evaluate(perfect, qrels, ["p@10"])
