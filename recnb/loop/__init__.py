"""The loop stage: alerts in, a retrain on fresh data and the shop's clicks out, the next challenger written into the experiment."""
