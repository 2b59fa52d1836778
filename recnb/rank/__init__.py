"""The rank stage: graded metrics, the baselines (BM25, zero-shot, popularity, co-occurrence, hybrids) and one call that scores rankers on a split."""
