"""The train stage: Lightning modules and data modules that fine-tune the two towers and the sequence model."""
