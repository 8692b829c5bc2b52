"""The peer of bench/serve-bench: what a user writes today to serve eight fine-tunes over HTTP. FastAPI + uvicorn
(one process), every fine-tune loaded whole with sentence-transformers, an OpenAI-shaped /v1/embeddings that
encodes each request with its task's model. No cross-request batching: FastAPI runs the plain `def` handler in its
thread pool, as the FastAPI docs show.

    python3 bench/serve/peer.py --models DIR --port PORT [--max-length 128]

DIR holds one model folder per task (the folder name is the task)."""
import argparse
import pathlib

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

parser = argparse.ArgumentParser()
parser.add_argument("--models", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--max-length", type=int, default=128)
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

models = {}
for d in sorted(pathlib.Path(args.models).iterdir()):
    if d.is_dir():
        m = SentenceTransformer(str(d), device="cpu")
        m.max_seq_length = args.max_length
        models[d.name] = m

app = FastAPI()


class EmbeddingsRequest(BaseModel):
    model: str
    input: str | list[str]


@app.get("/ready")
def ready():
    return {"status": "ready"}


@app.post("/v1/embeddings")
def embeddings(req: EmbeddingsRequest):
    m = models.get(req.model)
    if m is None:
        raise HTTPException(status_code=404, detail=f"no model {req.model}; loaded: {sorted(models)}")
    texts = [req.input] if isinstance(req.input, str) else req.input
    vectors = m.encode(texts, batch_size=64, normalize_embeddings=False, convert_to_numpy=True)
    return {
        "object": "list",
        "model": req.model,
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist(), "task": req.model} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


# Warm-up: one encode per model, as our server's warm-up batch.
for m in models.values():
    m.encode(["Warm-up: one resident base, every task."])
uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
