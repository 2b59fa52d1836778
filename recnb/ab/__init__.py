"""The A/B stage: champion and challenger arms (split or interleaved), simulated shoppers, the report and the promotion."""
