"""recnb's BentoML service: search, recommendation and similar items from a model packaged by `recnb package`.

Serve it with `bentoml serve service:RecnbService` from this folder (RECNB_MODEL picks the model, `recnb:latest` by
default; RECNB_API_KEY, when set, guards the API routes; RECNB_TLS_CERT and RECNB_TLS_KEY serve HTTPS). Everything it
does is in `recnb.serving` (the model), `recnb.gateway` (the HTTP edge) and `recnb.monitoring`, documented there.
"""
from __future__ import annotations
import asyncio, os, sys, time
import bentoml
from recnb.baselines import Ranking
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from recnb.bentoml_hooks import exit_with_parent, install_edge, quiet_rejections
from recnb.gateway import ApiKeyMiddleware
from recnb.serving import (MAX_K, Answer, PackagedModel, QueryBatcher, Ranked, RecommendBody, RequestError, SearchBatchBody,
                           SearchBody, SimilarBody)
from recnb.monitoring import OperationalMiddleware, ServiceMonitor, count_rejected

MODEL_TAG = os.environ.get("RECNB_MODEL", "recnb:latest")
API_KEY = os.environ.get("RECNB_API_KEY") or None
MAX_BATCH = int(os.environ.get("RECNB_MAX_BATCH", "64"))   # queries ranked in one pass
BATCHING = os.environ.get("RECNB_BATCHING", "1") != "0"    # 0: every /search ranks alone (the benchmark's comparison)
MONITORING = os.environ.get("RECNB_MONITORING", "1") != "0"  # 0: no recnb metrics, drift or anomaly detection
ARM = os.environ.get("RECNB_ARM", "champion")               # the `arm` label of recnb's metrics
DRIFT_WINDOW = int(os.environ.get("RECNB_DRIFT_WINDOW", "100"))   # live queries compared with the reference
ANOMALY_INTERVAL_S = float(os.environ.get("RECNB_ANOMALY_INTERVAL_S", "10"))  # interval of the latency and error series
TLS_CERT, TLS_KEY = os.environ.get("RECNB_TLS_CERT"), os.environ.get("RECNB_TLS_KEY")
if bool(TLS_CERT) != bool(TLS_KEY): sys.exit("recnb: set both RECNB_TLS_CERT and RECNB_TLS_KEY (PEM files) to serve HTTPS, or neither")
TLS = {"ssl": {"enabled": True, "certfile": TLS_CERT, "keyfile": TLS_KEY}} if TLS_CERT else {}

async def info(request):
    "GET /info: the model's tag, task, served ranker, dataset, metrics, gate, catalog size, device and the request limits."
    return JSONResponse(bentoml.get_current_service().model.describe())


async def docs(request):
    "GET /docs: the docs UI is BentoML's index page."
    return RedirectResponse("/")


def refusal() -> str | None:
    "Why the package is refused (RequestGuard answers 503 with it), or None while it serves."
    service = bentoml.get_current_service()
    return "the service is starting" if service is None else service.refusal


install_edge(refusal, count_rejected if MONITORING else lambda route, status: None)  # before BentoML builds its app: outside its middlewares
quiet_rejections()


@bentoml.asgi_app(Starlette(routes=[Route("/info", info, methods=["GET"]), Route("/docs", docs, methods=["GET"])]), path="/")
@bentoml.service(
    traffic={"timeout": int(os.environ.get("RECNB_TIMEOUT_S", "10")),
             "max_concurrency": int(os.environ.get("RECNB_MAX_CONCURRENCY", "64"))},
    workers=int(os.environ.get("RECNB_WORKERS", "1")),
    resources={"cpu": os.environ.get("RECNB_CPU", "2")},
    **TLS,
)
class RecnbService:
    "Ranks a packaged catalog for a query, a shopper's history or an item."
    packaged = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self):
        exit_with_parent()
        self.refusal, self.model, self.monitor = None, None, None
        try: self.model = PackagedModel(self.packaged.path, tag=str(self.packaged.tag))
        except Exception as e:  # a package that cannot be served: refuse it (503 with the reason), never restart in a loop
            self.refusal = str(e).splitlines()[0]
            print(f"recnb: refusing {self.packaged.tag}: {self.refusal}", file=sys.stderr, flush=True)
            return
        self.batcher = QueryBatcher(self._rank, max_batch_size=MAX_BATCH)
        if MONITORING:
            from safetensors.torch import load_file
            reference = load_file(str(self.model.path / "reference.safetensors"))
            self.monitor = ServiceMonitor(self.model.describe(), reference, arm=ARM, window=DRIFT_WINDOW)

    def _rank(self, queries: list[str]) -> list[Ranked]:
        ranking, vectors, best = self.model.rank_queries(queries, k=MAX_K)
        if self.monitor: self.monitor.searched(queries, vectors, best)
        return [Ranked(ids=i, scores=s) for i, s in zip(ranking.ids, ranking.scores)]

    def _checked(self, endpoint: str, rank, start: float) -> Answer:
        "The answer of `rank()`, or a 422 naming the unknown item ids it refused."
        try: ranking = rank()
        except RequestError as e: raise bentoml.exceptions.UnprocessableEntity(e.message) from None
        return self._answer(endpoint, self.model.hits(ranking), start)

    def _answer(self, endpoint: str, items: list, start: float) -> Answer:
        if self.monitor: self.monitor.answered(endpoint, len(items))
        return Answer(items=items, model=self.model.tag, took_ms=round(1000 * (time.perf_counter() - start), 3))

    @bentoml.api(input_spec=SearchBatchBody)
    def search_batch(self, queries: list[str]) -> list[Ranked]:
        "The top 100 items of each query in a list (1 to 128 queries), ranked in passes of up to 64."
        return [row for i in range(0, len(queries), MAX_BATCH) for row in self._rank(queries[i:i + MAX_BATCH])]

    @bentoml.api(input_spec=SearchBody)
    async def search(self, query: str, k: int = 10) -> Answer:
        "Products for a search query, best first (concurrent searches are ranked together)."
        start = time.perf_counter()
        row = await self.batcher(query) if BATCHING else (await asyncio.to_thread(self._rank, [query]))[0]
        return self._answer("/search", self.model.hits(Ranking([row.ids[:k]], [row.scores[:k]])), start)

    @bentoml.api(input_spec=RecommendBody)
    def recommend(self, history: list[str], k: int = 10) -> Answer:
        "Next products for a shopper's history (oldest first); their own items are never returned."
        return self._checked("/recommend", lambda: self.model.recommend(history, k), time.perf_counter())

    @bentoml.api(input_spec=SimilarBody)
    def similar(self, item_id: str, k: int = 10) -> Answer:
        "Products nearest to one product, without it."
        return self._checked("/similar", lambda: self.model.similar(item_id, k), time.perf_counter())


RecnbService.add_asgi_middleware(ApiKeyMiddleware, key=API_KEY)
if MONITORING: RecnbService.add_asgi_middleware(OperationalMiddleware, arm=ARM, interval_s=ANOMALY_INTERVAL_S)
