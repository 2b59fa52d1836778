"""The peer of bench_serve.py: the plain per-request search service a user would write with the same model.

sentence-transformers `encode` (mean pooling, normalised) + one torch matmul and top-k over the same item vectors,
behind FastAPI/uvicorn, one request at a time per call (no batching). Run: `python bench/peer_service.py PACKAGE_DIR PORT`.
"""
import json, sys
from pathlib import Path
import pandas as pd
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

package = Path(sys.argv[1])
# the run's own torch encoder and its item vectors (a package may hold a compressed encoder instead: `recnb package --encoder`)
run_dir = Path(json.loads((package / "package.json").read_text())["run_dir"])
model = SentenceTransformer(str(run_dir / "model"), device="cpu")
model.max_seq_length = 128
vectors = load_file(str(run_dir / "index" / "vectors.safetensors"))["vectors"]
ids = json.loads((run_dir / "index" / "ids.json").read_text())
titles = pd.read_parquet(package / "catalog.parquet")["title"].astype(str).tolist()
app = FastAPI()

class Search(BaseModel):
    query: str
    k: int = 10

@app.get("/readyz")
def ready(): return {"ok": True}

@app.post("/search")
def search(body: Search):
    with torch.inference_mode():
        query = model.encode([body.query], convert_to_tensor=True, normalize_embeddings=True)
        scores, top = (vectors @ query[0]).topk(body.k)
    return {"items": [{"item_id": ids[i], "score": float(s), "title": titles[i]} for s, i in zip(scores.tolist(), top.tolist())]}

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
