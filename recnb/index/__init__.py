"""The index stage: text to unit vectors (torch or ONNX, fp32 or int8) and exact top-k inner product over a whole catalog, with the index's own plan."""
