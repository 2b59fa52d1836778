"""The serve stage: package a run, compress its encoder, answer requests behind a guarded HTTP edge, log feedback, watch metrics and drift."""
