"""The run stage: one parameter set into one run directory; many into a leaderboard, a winner and a gate."""
