"""recnb's BentoML service: search, recommendation and similar items from a model packaged by `recnb package`, or an
experiment comparing packaged models.

Serve it with `bentoml serve service:RecnbService` from this folder (RECNB_MODEL picks the model, `recnb:latest` by
default; RECNB_EXPERIMENT, an experiment file, serves its arms instead and logs answers and feedback to RECNB_FEEDBACK_LOG,
with shoppers' ids hashed under RECNB_AB_SECRET; RECNB_API_KEY, when set, guards the API routes; RECNB_TLS_CERT and
RECNB_TLS_KEY serve HTTPS). Everything it does is in `recnb.serve.serving` (a model), `recnb.ab.ab_serving` (the arms),
`recnb.serve.gateway` (the HTTP edge) and `recnb.serve.monitoring`, documented there.
"""
from __future__ import annotations
import asyncio, os, sys, time
from functools import partial
from pathlib import Path
import bentoml
from recnb.rank.baselines import Ranking
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from recnb.ab.ab_serving import ArmedModels, load_models, read_promotion, unit_of
from recnb.serve.bentoml_hooks import exit_with_parent, install_edge, quiet_rejections
from recnb.serve.gateway import ApiKeyMiddleware
from recnb.serve.cache import AnswerCache
from recnb.serve.serving import (MAX_K, Answer, FeedbackAck, FeedbackBody, QueryBatcher, Ranked, RecommendBody,
                           RequestError, SearchBatchBody, SearchBody, SimilarBody, freeze_loaded)
from recnb.serve.monitoring import OperationalMiddleware, ServiceMonitor, count_answer, count_cache, count_feedback, count_rejected, count_rerank

MODEL_TAG = os.environ.get("RECNB_MODEL", "recnb:latest")
API_KEY = os.environ.get("RECNB_API_KEY") or None

def setting(name: str, parse, valid, want: str, default=None):
    "A setting from the environment (`default` when unset); a bad value stops the service before it starts, saying `want`."
    raw = os.environ.get(name)
    if raw in (None, ""): return default
    try: value = parse(raw)
    except ValueError: value = None
    if value is None or not valid(value): sys.exit(f"recnb: {name}={raw}: {want}")
    return value

MAX_BATCH = setting("RECNB_MAX_BATCH", int, lambda v: v >= 1, "give the most queries ranked in one pass, 1 or more", 64)
BATCHING = os.environ.get("RECNB_BATCHING", "1") != "0"    # 0: every /search ranks alone (the benchmark's comparison)
# /search answers kept per worker for repeated queries; 0: none
CACHE_SIZE = setting("RECNB_CACHE_SIZE", int, lambda v: v >= 0, "give 0 (no cache) or more", 4096)
# a two-stage package's time budget, from the arrival of a batch's oldest request (its run's rerank.timeout_ms when unset); 0: first stage only
RERANK_TIMEOUT_MS = setting("RECNB_RERANK_TIMEOUT_MS", float, lambda v: 0 <= v < float("inf"), "give milliseconds, 0 or more (0: no second stage)")
# a two-stage package's first-stage items re-ranked per query (its run's rerank.top_n when unset): fewer cost less time
RERANK_TOP_N = setting("RECNB_RERANK_TOP_N", int, lambda v: 2 <= v <= MAX_K, f"give the items re-ranked per query, 2 to {MAX_K}")
MONITORING = os.environ.get("RECNB_MONITORING", "1") != "0"  # 0: no recnb metrics, drift or anomaly detection
ARM = os.environ.get("RECNB_ARM", "champion")               # the arm's name without an experiment
DRIFT_WINDOW = setting("RECNB_DRIFT_WINDOW", int, lambda v: v >= 1, "give the live queries compared with the reference, 1 or more", 100)
ANOMALY_INTERVAL_S = setting("RECNB_ANOMALY_INTERVAL_S", float, lambda v: 0 < v < float("inf"), "give seconds, above 0", 10.0)  # of the latency and error series
TLS_CERT, TLS_KEY = os.environ.get("RECNB_TLS_CERT"), os.environ.get("RECNB_TLS_KEY")
if bool(TLS_CERT) != bool(TLS_KEY): sys.exit("recnb: set both RECNB_TLS_CERT and RECNB_TLS_KEY (PEM files) to serve HTTPS, or neither")
TLS = {"ssl": {"enabled": True, "certfile": TLS_CERT, "keyfile": TLS_KEY}} if TLS_CERT else {}

EXPERIMENT, LOG_PATH, SECRET = None, None, None
if os.environ.get("RECNB_EXPERIMENT"):   # checked here, at import: a bad file or a missing secret never starts a worker
    from recnb.ab.arms import load_experiment
    from recnb.serve.feedback import secret_from_env
    from recnb.params import ParamsError
    try: EXPERIMENT, SECRET = load_experiment(os.environ["RECNB_EXPERIMENT"]), secret_from_env()
    except (ParamsError, OSError, ValueError) as e: sys.exit(f"recnb: RECNB_EXPERIMENT: {e}")
    LOG_PATH = Path(os.environ.get("RECNB_FEEDBACK_LOG") or Path(os.environ["RECNB_EXPERIMENT"]).with_name(f"{EXPERIMENT.name}.sqlite"))
TAGS = list(dict.fromkeys(a.model for a in EXPERIMENT.arms)) if EXPERIMENT else [MODEL_TAG]   # each model once

async def info(request):
    "GET /info: the champion's tag, task, served ranker, dataset, metrics, gate, catalog size, device and the request limits; the experiment."
    return JSONResponse(bentoml.get_current_service().describe())


async def docs(request):
    "GET /docs: the docs UI is BentoML's index page."
    return RedirectResponse("/")


def refusal() -> str | None:
    "Why the package is refused (RequestGuard answers 503 with it), or None while it serves."
    service = bentoml.get_current_service()
    return "the service is starting" if service is None else service.refusal


install_edge(refusal, count_rejected if MONITORING else lambda route, status: None)  # before BentoML builds its app: outside its middlewares
quiet_rejections()


class RecnbService:
    "Ranks a packaged catalog for a query, a shopper's history or an item; with an experiment, by the shopper's arm."

    def __init__(self):
        exit_with_parent()
        self.refusal, self.armed, self.monitors = None, None, {}
        packages = [getattr(self, f"package_{i}") for i in range(len(TAGS))]
        try:
            models, self.costs = load_models({t: p.path for t, p in zip(TAGS, packages)}, tags={t: str(p.tag) for t, p in zip(TAGS, packages)})
            for model in models.values():
                if RERANK_TIMEOUT_MS is not None: model.rerank_timeout_s = RERANK_TIMEOUT_MS / 1000
                if RERANK_TOP_N is not None and model.second: model.second.top_n = RERANK_TOP_N
            log = None
            if EXPERIMENT:
                from recnb.serve.feedback import FeedbackLog
                log = FeedbackLog(LOG_PATH, SECRET, keep_queries=EXPERIMENT.keep_queries)
            self.armed = ArmedModels(models, EXPERIMENT, log, arm=ARM, promotion=read_promotion(LOG_PATH, EXPERIMENT.name) if EXPERIMENT else None)
        except Exception as e:  # a package or experiment that cannot be served: refuse it (503 with the reason), never restart in a loop
            self.refusal = str(e).splitlines()[0]
            print(f"recnb: refusing {', '.join(TAGS)}: {self.refusal}", file=sys.stderr, flush=True)
            return
        self.batchers = {tag: QueryBatcher(partial(self._rank, tag), max_batch_size=MAX_BATCH) for tag in models}
        self.cache, self.labels = AnswerCache(CACHE_SIZE), self.armed.labels()
        if MONITORING:
            from safetensors.torch import load_file
            for tag, label in self.labels.items():
                model = models[tag]
                self.monitors[tag] = ServiceMonitor(model.describe(), load_file(str(model.path / "reference.safetensors")),
                                                    arm=label, window=DRIFT_WINDOW)
        freeze_loaded()   # a full garbage collection no longer walks the loaded models inside a request

    def describe(self) -> dict:
        "What /info shows."
        champion = self.armed.models[self.armed.arms_for(None)[0].model]
        experiment = None
        if EXPERIMENT:
            experiment = {"name": EXPERIMENT.name, "mode": EXPERIMENT.mode, "champion": EXPERIMENT.champion, "log": str(LOG_PATH),
                          "arms": [{"name": a.name, "model": self.armed.models[a.model].tag, "share": a.share, **self.costs[a.model]}
                                   for a in EXPERIMENT.arms],
                          "promotion": {k: v for k, v in (read_promotion(LOG_PATH, EXPERIMENT.name if EXPERIMENT else None) or {}).items() if k != "report"} or None}
        return {**champion.describe(), "arm": self.armed.arms_for(None)[0].name, "experiment": experiment}

    def _rank(self, tag: str, queries: list[str], since: float | None = None) -> list[tuple[Ranked, object, object, bool]]:
        "Each query's top MAX_K, vector and best score (what the answer cache keeps) and whether it is final, after monitoring saw them; a second stage's budget counts from `since`."
        ranking, vectors, best = self.armed.models[tag].rank_queries(queries, k=MAX_K, since=since)
        if tag in self.monitors: self.monitors[tag].searched(queries, vectors, best)
        if MONITORING and ranking.reranked is not None: count_rerank(self.labels[tag], ranking.reranked)
        final = ranking.reranked or [True] * len(queries)   # False: a two-stage model's fallback (not cached)
        return [(Ranked(ids=i, scores=s), v.clone(), b.clone(), f)   # copies: a cached row must not hold its whole batch
                for i, s, v, b, f in zip(ranking.ids, ranking.scores, vectors, best, final)]

    async def _search_one(self, tag: str, query: str) -> Ranked:
        "One /search query's ranking by model `tag`: from the answer cache (monitored like a computed one), or computed."
        model = self.armed.models[tag]
        found = self.cache.get(model, query)
        if self.cache and MONITORING: count_cache(self.labels[tag], found is not None)
        if found is not None:
            if tag in self.monitors: self.monitors[tag].searched([query], found[1][None], found[2][None])
            return found[0]
        if BATCHING: found = await self.batchers[tag](query)
        else: found = (await asyncio.to_thread(self._rank, tag, [query], time.perf_counter()))[0]
        if found[3]: self.cache.put(model, query, found)   # a fallback answer is not kept: the next ask may be re-ranked
        return found[0]

    def _unit(self, user: str | None, ctx: bentoml.Context) -> str | None:
        try: return unit_of(user, ctx.request.headers)
        except RequestError as e: raise http_error(e) from None

    def _answer(self, endpoint: str, arms, rankings: list[Ranking], k: int, start: float, unit, query=None) -> Answer:
        answer = self.armed.answer(endpoint, arms, rankings, k, start, unit=unit, query=query)
        if MONITORING: count_answer(endpoint, answer.arm, len(answer.items), assigned=unit is not None)
        return answer

    def _ranked_by_arms(self, endpoint: str, rank, user: str | None, ctx: bentoml.Context, k: int) -> Answer:
        "The answer of `rank(model)` by the request's arms, or a 422 naming the unknown item ids it refused."
        start, unit = time.perf_counter(), self._unit(user, ctx)
        arms = self.armed.arms_for(unit)
        try: rankings = [rank(self.armed.models[a.model]) for a in arms]
        except RequestError as e: raise http_error(e) from None
        return self._answer(endpoint, arms, rankings, k, start, unit)

    @bentoml.api(input_spec=SearchBatchBody)
    def search_batch(self, queries: list[str]) -> list[Ranked]:
        "The champion's top 100 items of each query in a list (1 to 128 queries), ranked in passes of up to 64."
        tag = self.armed.arms_for(None)[0].model
        return [row for i in range(0, len(queries), MAX_BATCH) for row, *_ in self._rank(tag, queries[i:i + MAX_BATCH])]

    @bentoml.api(input_spec=SearchBody)
    async def search(self, ctx: bentoml.Context, query: str, k: int = 10, user: str | None = None) -> Answer:
        "Products for a search query, best first (concurrent searches are ranked together)."
        start, unit = time.perf_counter(), self._unit(user, ctx)
        arms = self.armed.arms_for(unit)
        rows = await asyncio.gather(*(self._search_one(a.model, query) for a in arms))
        rankings = [Ranking([row.ids], [row.scores]) for row in rows]
        if self.armed.log is None: return self._answer("/search", arms, rankings, k, start, unit, query)
        return await asyncio.to_thread(self._answer, "/search", arms, rankings, k, start, unit, query)  # the log syncs to disk

    @bentoml.api(input_spec=RecommendBody)
    def recommend(self, ctx: bentoml.Context, history: list[str], k: int = 10, user: str | None = None) -> Answer:
        "Next products for a shopper's history (oldest first); their own items are never returned."
        return self._ranked_by_arms("/recommend", lambda model: model.recommend(history, k), user, ctx, k)

    @bentoml.api(input_spec=SimilarBody)
    def similar(self, ctx: bentoml.Context, item_id: str, k: int = 10, user: str | None = None) -> Answer:
        "Products nearest to one product, without it."
        return self._ranked_by_arms("/similar", lambda model: model.similar(item_id, k), user, ctx, k)

    @bentoml.api(input_spec=FeedbackBody)
    def feedback(self, request_id: str, item_id: str, event: str) -> FeedbackAck:
        "A shopper's click, add-to-cart or purchase on an item of an answer; acknowledged once it is on disk."
        try: ack, arm = self.armed.feedback(request_id, item_id, event)
        except RequestError as e: raise http_error(e) from None
        if arm and MONITORING: count_feedback(event, arm)
        return ack


def http_error(e: RequestError) -> bentoml.exceptions.BentoMLException:
    "BentoML's exception for a `RequestError`'s status (its message is the answer's error)."
    kind = {400: bentoml.exceptions.BadInput, 404: bentoml.exceptions.NotFound}.get(e.status, bentoml.exceptions.UnprocessableEntity)
    return kind(e.message)


for _i, _tag in enumerate(TAGS): setattr(RecnbService, f"package_{_i}", bentoml.models.BentoModel(_tag))  # bentoml build packs each
RecnbService = bentoml.service(
    traffic={"timeout": setting("RECNB_TIMEOUT_S", int, lambda v: v >= 1, "give whole seconds, 1 or more", 10),
             "max_concurrency": setting("RECNB_MAX_CONCURRENCY", int, lambda v: v >= 1, "give requests, 1 or more", 64)},
    workers=setting("RECNB_WORKERS", int, lambda v: v >= 1, "give worker processes, 1 or more", 1),
    resources={"cpu": os.environ.get("RECNB_CPU", "2")},
    **TLS,
)(RecnbService)
RecnbService = bentoml.asgi_app(Starlette(routes=[Route("/info", info, methods=["GET"]), Route("/docs", docs, methods=["GET"])]), path="/")(RecnbService)
RecnbService.add_asgi_middleware(ApiKeyMiddleware, key=API_KEY)
if MONITORING: RecnbService.add_asgi_middleware(OperationalMiddleware, arm=ARM, interval_s=ANOMALY_INTERVAL_S)
