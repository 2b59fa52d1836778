"ItemIndex: exact top-k against a numpy brute force and plain torch for every plan, exclusions, ties, calibration, save/load, bad input, a real catalog."
import json
import numpy as np
import pytest
import torch
import recnb.index.passes, recnb.index.scorer, recnb.index.tuning
from recnb.index.precision import error_bound, exact_sums, power_of_two_scale
from recnb.index.scorer import ItemIndex
from recnb.index.tuning import Plan, bounded, candidates, device_fingerprint


@pytest.fixture(params=["groups", "per-step"])
def exact_pass(request, monkeypatch):
    "Run a test with the exact pass ranking group maxima (forced even for small work) and with a top-k per step."
    monkeypatch.setattr(recnb.index.passes, "GROUPED_FROM", 0 if request.param == "groups" else 1 << 62)
    return request.param


def brute_force(items, queries, k, exclude_positions=None):
    "Scores and top-k positions by scoring every pair in float64 and sorting."
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if exclude_positions is not None:
        for row, positions in enumerate(exclude_positions): scores[row, positions] = -np.inf
    return scores, np.argsort(-scores, axis=1, kind="stable")[:, :k]


def assert_exact(found, scores, expected, k_ids=10):
    "Same ids as the brute force in the first `k_ids` ranks (unless an fp32 tie), same scores everywhere."
    got = found.indices.numpy()
    width = expected.shape[1]
    assert got.shape == expected.shape
    got_scores = np.take_along_axis(scores, np.maximum(got, 0), 1)
    want_scores = np.take_along_axis(scores, expected, 1)
    real = np.isfinite(want_scores)
    assert ((got >= 0) == real).all()
    assert np.allclose(got_scores[real], want_scores[real], atol=1e-5)
    head = min(k_ids, width)
    differ = (got[:, :head] != expected[:, :head]) & real[:, :head]
    # a differing id is only allowed where the two items' scores tie within fp32 rounding
    assert np.allclose(got_scores[:, :head][differ], want_scores[:, :head][differ], atol=1e-6)
    assert differ.sum() <= 0.01 * differ.size + 1
    assert np.allclose(found.scores.numpy()[real], want_scores[real], atol=1e-4)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "auto"])
@pytest.mark.parametrize("n_items,d", [(1, 8), (257, 16), (4099, 64), (30011, 384)])
def test_exact_against_numpy(precision, n_items, d, exact_pass):
    rng = np.random.default_rng(n_items)
    items = unit(rng, n_items, d)
    index = ItemIndex(torch.from_numpy(items), [f"i{j}" for j in range(n_items)], device="cpu", autotune=False,
                      chunk_size=1000, max_scores=1000 * 50, precision=precision)  # the fixed rule; several steps, the last one partial
    big = n_items > 5000
    for n_queries in (1, 64) if big else (1, 3, 64, 130):
        queries = rng.standard_normal((n_queries, d)).astype(np.float32)
        # k near and past the catalog size on the smaller catalogs (a full ranking of 30k items is slow to check)
        for k in (1, 10, 100) if big else sorted({1, 10, max(1, n_items - 1), n_items, n_items + 7}):
            scores, expected = brute_force(items, queries, min(k, n_items))
            assert_exact(index.search(queries, k), scores, expected)
    assert index.fallbacks == 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_clustered_items_fall_back_and_stay_exact(precision):
    "Many near-identical items inside the 16-bit error band: the candidate test fails and the exact pass answers."
    rng = np.random.default_rng(7)
    base = unit(rng, 1, 128)
    items = (base + 1e-4 * rng.standard_normal((2000, 128))).astype(np.float32)
    index = ItemIndex(torch.from_numpy(items), [str(j) for j in range(2000)], device="cpu", precision=precision)
    queries = np.concatenate([base, unit(rng, 4, 128)]).astype(np.float32)
    scores, expected = brute_force(items, queries, 10)
    assert_exact(index.search(queries, 10), scores, expected)
    assert index.fallbacks >= 1
    # the exact redo keeps each query's own exclusions
    left_out = [list(expected[0, :3]), [], list(expected[2, :5]), [], []]
    scores, expected = brute_force(items, queries, 10, left_out)
    assert_exact(index.search(queries, 10, exclude=[[str(p) for p in row] for row in left_out]), scores, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_error_bound_holds(dtype):
    "The bound covers real matmuls: norms from tiny to large, components in fp16's subnormal range, large d."
    g = torch.Generator().manual_seed(3)
    for d, spread in ((16, 10.0), (384, 10.0), (1024, 10.0), (384, 1e-6), (384, 1e6)):
        items = torch.randn(2000, d, generator=g) * torch.rand(2000, 1, generator=g) * spread
        items[:100] *= torch.rand(100, d, generator=g) < 0.5  # sparse rows
        items[100:200] *= 1e-9                                 # components far below 2^-14 after scaling
        queries = torch.randn(16, d, generator=g) * 3
        fp16 = dtype == torch.float16
        item_scale = power_of_two_scale(float(items.norm(dim=1).max())) if fp16 else 1.0
        query_scale = power_of_two_scale(float(queries.norm(dim=1).max())) if fp16 else 1.0
        approx = ((queries * query_scale).to(dtype) @ (items * item_scale).to(dtype).T).double()
        assert torch.isfinite(approx).all()
        exact = (queries.double() * query_scale) @ (items.double() * item_scale).T
        epsilon, eta, zeta = error_bound(d, dtype)
        q_norm, max_norm = queries.double().norm(dim=1, keepdim=True) * query_scale, items.double().norm(dim=1).max() * item_scale
        bound = epsilon * q_norm * max_norm + eta * approx.abs() + zeta * (q_norm + max_norm + 1)
        assert ((approx - exact).abs() <= bound).all(), (d, spread)


def test_exclusions(exact_pass):
    rng = np.random.default_rng(1)
    items = unit(rng, 5000, 32)
    ids = [f"sku{j}" for j in range(5000)]
    queries = unit(rng, 20, 32)
    positions = [rng.choice(5000, size=int(rng.integers(0, 40)), replace=False) for _ in range(20)]
    # also exclude each query's 5 best items (the maxima of their groups in the exact pass)
    best = np.argsort(-(queries @ items.T), axis=1)[:, :5]
    positions = [np.union1d(row, top) for row, top in zip(positions, best)]
    for precision in ("fp32", "bf16", "fp16"):
        index = ItemIndex(torch.from_numpy(items), ids, device="cpu", chunk_size=512, max_scores=512 * 8, precision=precision)
        exclude = [[ids[p] for p in row] + ["not-in-catalog"] for row in positions]
        found = index.search(queries, 10, exclude=exclude)
        scores, expected = brute_force(items, queries, 10, positions)
        assert_exact(found, scores, expected)
        for row, got in zip(positions, found.ids): assert not set(got) & {ids[p] for p in row}
    # exclusions leaving fewer than k items: padded with -inf / -1, ids list shorter
    small = ItemIndex(torch.from_numpy(items[:5]), ids[:5], device="cpu")
    found = small.search(queries[:2], k=4, exclude=[ids[:3], []])
    assert found.ids[0] and len(found.ids[0]) == 2 and len(found.ids[1]) == 4
    assert found.indices[0, 2:].tolist() == [-1, -1] and torch.isneginf(found.scores[0, 2:]).all()
    assert small.search(queries[:1], k=3, exclude=[ids[:5]]).ids == [[]]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    items = rng.standard_normal((1234, 48)).astype(np.float32)
    ids = [f"item-{j}" for j in range(1234)]
    index = ItemIndex(torch.from_numpy(items), ids, device="cpu", chunk_size=300, precision="bf16")
    index.save(tmp_path / "index")
    again = ItemIndex.load(tmp_path / "index", device="cpu")
    assert again.ids == ids and torch.equal(again.vectors, index.vectors)
    assert (again.chunk_size, again.precision) == (300, "bf16")
    queries = rng.standard_normal((5, 48)).astype(np.float32)
    a, b = index.search(queries, 7), again.search(queries, 7)
    assert a.ids == b.ids and torch.equal(a.scores, b.scores)
    with pytest.raises(FileNotFoundError, match="ids.json"):
        (tmp_path / "index" / "ids.json").unlink(); ItemIndex.load(tmp_path / "index")


def test_bad_input():
    index = ItemIndex(torch.randn(10, 4), [str(j) for j in range(10)], device="cpu")
    with pytest.raises(ValueError, match=r"shape \(n_queries, 4\)"): index.search(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"shape"): index.search(torch.zeros(2, 2, 4))
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"): index.search(torch.zeros(1, 4), k=k)
    with pytest.raises(ValueError, match="NaN"): index.search(torch.full((1, 4), float("nan")))
    with pytest.raises(ValueError, match="one list"): index.search(torch.zeros(2, 4), exclude=[["1"]])
    with pytest.raises(ValueError, match="string"): index.search(torch.zeros(1, 4), exclude=["1"])
    with pytest.raises(ValueError, match="ids"): ItemIndex(torch.randn(3, 4), ["a", "b"])
    with pytest.raises(ValueError, match="unique"): ItemIndex(torch.randn(2, 4), ["a", "a"])
    assert index.search(torch.zeros(4), k=3).indices.shape == (1, 3)  # a single (d,) query is fine


def test_real_catalog_keyword_vectors(homedepot):
    "Home Depot titles with keyword-count vectors: the index ranks exactly as counting shared keywords does."
    catalog = homedepot.catalog
    words = ["drill", "lamp", "paint", "white", "door", "led", "steel", "wood", "black", "light", "pvc", "brass"]

    class KeywordEncoder:
        def encode(self, texts):
            return torch.tensor([[float(w in t.lower().split()) for w in words] for t in texts])

    encoder = KeywordEncoder()
    index = ItemIndex.build(encoder, catalog, device="cpu", precision="bf16")
    assert len(index) == len(catalog) == 54667
    queries = ["white led light", "black steel door", "brass lamp", "drill"]
    vectors = encoder.encode(queries)
    found = index.search(vectors, k=20)
    counts = index.vectors.numpy() @ vectors.numpy().T
    for row, query in enumerate(queries):
        best = counts[:, row].max()
        assert found.scores[row, 0] == best >= 1
        # every returned item carries the best count or sits in the right order, and no better item is left out
        got = counts[catalog.positions(found.ids[row]), row]
        assert (np.diff(got) <= 0).all() and got[-1] >= np.sort(counts[:, row])[-20]


def test_device_setting_governs_the_index(monkeypatch):
    "`device=None` follows the `device` setting (RECNB_DEVICE), the same rule as the encoder's; an argument beats it."
    import recnb.index.encoder
    vectors = torch.eye(3)
    monkeypatch.setenv("RECNB_DEVICE", "cpu")
    assert ItemIndex(vectors, ["a", "b", "c"]).device == torch.device("cpu")
    monkeypatch.setenv("RECNB_DEVICE", "meta")  # a device torch accepts that 'auto' never picks
    assert recnb.index.scorer.resolve_device(None) == torch.device("meta") == recnb.index.encoder.resolve_device(None)  # one rule (recnb.config)
    assert ItemIndex(vectors, ["a", "b", "c"], device="cpu").device == torch.device("cpu")


def plain_torch(items, queries, k, exclude_positions=None, device="cpu"):
    "The reference every plan must match: fp32 `q @ V.T` (no TF32), excluded items at -inf, `topk`."
    with exact_sums(device):
        scores = torch.as_tensor(queries, device=device) @ torch.as_tensor(items, device=device).T
    for row, positions in enumerate(exclude_positions or []): scores[row, torch.as_tensor(positions, dtype=torch.int64)] = -np.inf
    top = scores.topk(k, dim=1)
    return torch.return_types.topk((top.values.cpu(), top.indices.cpu()))


def every_plan(index):
    "The candidates `tune` would time, plus small blocks that force several query blocks and catalog steps."
    small = [Plan("plain", 512, 3 * len(index)), Plan("exact", 512, 512 * 8)]
    if index.vectors_low is not None: small.append(Plan("two_pass", 512, 512 * 8))
    if any(p.method == "int8" for p in candidates(index)): small.append(Plan("int8", 512, 3 * len(index)))  # blocks of 3 queries
    return candidates(index) + small


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_every_plan_matches_plain_torch(precision, exact_pass):
    "Whichever plan calibration picks, the ids and scores are plain torch's: random data with exclusions, k past the catalog."
    rng = np.random.default_rng(11)
    items = unit(rng, 3001, 48)
    ids = [f"i{j}" for j in range(3001)]
    index = ItemIndex(torch.from_numpy(items), ids, device="cpu", precision=precision, autotune=False)
    queries = unit(rng, 70, 48)
    best = np.argsort(-(queries @ items.T), axis=1)[:, :4]  # also leave out each query's best items
    left_out = [np.union1d(rng.choice(3001, size=int(rng.integers(0, 30)), replace=False), top) for top in best]
    exclude = [[ids[p] for p in row] for row in left_out]
    for plan in every_plan(index):
        for n_queries, k in ((1, 10), (7, 1), (70, 10), (2, 3001), (3, 5000)):
            want = plain_torch(items, queries[:n_queries], min(k, 3001), left_out[:n_queries])
            index.use_plan(plan)  # every batch takes this plan
            found = index.search(queries[:n_queries], k, exclude=exclude[:n_queries])
            real = torch.isfinite(want.values)
            head = (slice(None), slice(0, 10))  # deep in a full ranking, fp32 scores 1e-7 apart may swap: scores there
            assert torch.equal(found.indices[head][real[head]], want.indices[head][real[head]]), (plan, n_queries, k)
            assert torch.allclose(found.scores[real], want.values[real], atol=1e-6) and (found.indices[~real] == -1).all()
    assert index.fallbacks == 0


def test_every_plan_handles_ties():
    "Duplicated items and integer scores tie exactly: every plan returns tied items in some order, with the right scores."
    rng = np.random.default_rng(12)
    base = rng.integers(-2, 3, size=(400, 16)).astype(np.float32)
    items = np.concatenate([base, base, base[:137]])  # every score appears at least twice
    ids = [str(j) for j in range(len(items))]
    queries = rng.integers(-2, 3, size=(20, 16)).astype(np.float32)
    left_out = [rng.choice(len(items), size=5, replace=False) for _ in range(20)]
    scores, expected = brute_force(items, queries, 25, left_out)
    index = ItemIndex(torch.from_numpy(items), ids, device="cpu", autotune=False)
    for plan in every_plan(index):
        index.use_plan(plan)
        found = index.search(queries, 25, exclude=[[ids[p] for p in row] for row in left_out])
        assert np.array_equal(found.scores.numpy(), np.take_along_axis(scores, expected, 1)), plan
        assert all(not set(found.indices[row].tolist()) & set(row_out) for row, row_out in enumerate(left_out))


def test_calibration_plans_each_batch_class_before_the_first_search(monkeypatch):
    "A catalog from TUNE_FROM items is calibrated on its first search (one of the candidates per class), once per shape."
    rng = np.random.default_rng(13)
    items = unit(rng, 3000, 32)
    ids = [str(j) for j in range(3000)]
    monkeypatch.setattr(recnb.index.tuning, "PLANS", {})
    index = ItemIndex(torch.from_numpy(items), ids, device="cpu")
    index.search(unit(rng, 2, 32), 5)
    assert index.tuned is None  # below TUNE_FROM: the fixed rule, no calibration
    monkeypatch.setattr(recnb.index.tuning, "TUNE_FROM", 3000)
    queries = unit(rng, 40, 32)
    found = index.search(queries, 5)
    tuned = index.tuned
    assert set(tuned.plans) == {1, 64, 1000} and all(p in candidates(index) for p in tuned.plans.values())
    assert set(tuned.timings) == {1, 64, 1000} and all(t > 0 for times in tuned.timings.values() for t in times.values())
    assert tuned.seconds > 0 and tuned.fingerprint == device_fingerprint("cpu")
    assert torch.equal(found.indices, plain_torch(items, queries, 5).indices)
    same_shape = ItemIndex(torch.from_numpy(items[::-1].copy()), ids, device="cpu")
    assert same_shape.calibrate() == 0.0 and same_shape.tuned == index.tuned  # measured once in this process
    off = ItemIndex(torch.from_numpy(items), ids, device="cpu", autotune=False)
    off.search(queries, 5)
    assert off.tuned is None


def test_calibration_is_light(monkeypatch):
    "Every timed run scores at most about TUNE_SCORES pairs, and each class keeps at least LARGE_BATCH of its queries."
    rng = np.random.default_rng(16)
    n = 30_000
    index = ItemIndex(torch.from_numpy(unit(rng, n, 16)), [str(j) for j in range(n)], device="cpu")
    runs, timed = [], recnb.index.tuning._time
    def counted(part, plan, batches, k):
        runs.append((len(part), batches.shape[0], batches.shape[1]))
        return timed(part, plan, batches, k)
    monkeypatch.setattr(recnb.index.tuning, "_time", counted)
    index.tune(k=100)
    budget = recnb.index.tuning.TUNE_SCORES["cpu"]
    assert all(items * searches * queries <= budget for items, searches, queries in runs)
    assert max(queries for _, _, queries in runs) == budget // n  # 1,000 queries timed as 559, on the whole catalog
    assert len(runs) <= 3 * len(candidates(index)) * 3  # three classes; on a CPU a first and at most two full runs each


def test_saved_plan_is_used_only_on_the_same_device(tmp_path):
    "A plan saved with the index is loaded back when the fingerprint and precision match, and ignored otherwise."
    rng = np.random.default_rng(14)
    index = ItemIndex(torch.from_numpy(unit(rng, 500, 16)), [str(j) for j in range(500)], device="cpu")
    index.tune(batch_sizes=(1, 64), repeats=1)
    index.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["plan"]["fingerprint"] == device_fingerprint("cpu") == index.tuned.fingerprint
    again = ItemIndex.load(tmp_path / "index", device="cpu")
    assert again.tuned == index.tuned and again.tuned.fingerprint == index.tuned.fingerprint
    assert ItemIndex.load(tmp_path / "index", device="cpu", precision="fp32").tuned is None  # other candidates
    meta["plan"]["fingerprint"] = "cuda NVIDIA H100 80GB HBM3, torch 2.13.0"
    (tmp_path / "index" / "index.json").write_text(json.dumps(meta))
    assert ItemIndex.load(tmp_path / "index", device="cpu").tuned is None
    threads = torch.get_num_threads()
    try:  # the same CPU with another thread count is another device for timing
        torch.set_num_threads(threads + 1)
        assert device_fingerprint("cpu") != index.tuned.fingerprint
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="one of"): Plan("fastest", 1, 1)


def test_exact_sums_restores_what_the_program_set():
    "TF32 and reduced 16-bit sums are off inside a CUDA search, restored after (also nested), untouched for a CPU search."
    matmul = torch.backends.cuda.matmul
    flag, exact = exact_sums.tf32_switch()
    saved = {name: getattr(matmul, name) for name in (*exact_sums.reductions, flag)}
    try:
        setattr(matmul, flag, "tf32" if flag == "fp32_precision" else True)
        for name in exact_sums.reductions: setattr(matmul, name, True)
        with exact_sums("cpu"): assert getattr(matmul, flag) in ("tf32", True)
        with exact_sums("cuda"), exact_sums("cuda"):
            assert getattr(matmul, flag) == exact and not any(getattr(matmul, n) for n in exact_sums.reductions)
        assert getattr(matmul, flag) in ("tf32", True) and all(getattr(matmul, n) for n in exact_sums.reductions)
    finally:
        for name, value in saved.items(): setattr(matmul, name, value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch", [1, 64, 1000])
def test_scorer_on_cuda_equals_plain_torch(batch):
    "On the GPU, uncalibrated (the fixed rule: bf16 first pass, blocks sized for the device), the ids are plain torch's."
    g = torch.Generator().manual_seed(batch)
    items = torch.nn.functional.normalize(torch.randn(200_000, 384, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(batch, 384, generator=g), dim=1)
    index = ItemIndex(items, [str(i) for i in range(len(items))], device="cuda", autotune=False)
    found = index.search(queries.cuda(), k=10)
    plain = plain_torch(items, queries, 10, device="cuda")
    assert found.indices.cpu().tolist() == plain.indices.cpu().tolist()
    assert torch.allclose(found.scores.cpu(), plain.values.cpu(), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tuned_cuda_index_equals_plain_torch():
    "On a GPU: a calibrated index, and every candidate, gives plain torch's ids at batch 1, 64 and 1,000; blocks fit free memory."
    rng = np.random.default_rng(15)
    items = unit(rng, 300_000, 384)
    index = ItemIndex(torch.from_numpy(items), [str(j) for j in range(len(items))], device="cuda")
    index.tune()
    assert set(index.tuned.plans) == {1, 64, 1000} and index.tuned.fingerprint.startswith("cuda ") and index.tuned.seconds < 30
    free = torch.cuda.mem_get_info()[0]
    assert bounded(Plan("plain", 4096, 1 << 62), index.device).max_scores <= free // 16
    for batch in (1, 64, 1000):
        queries = unit(rng, batch, 384)
        want = plain_torch(items, queries, 10, device="cuda")
        found = index.search(torch.from_numpy(queries).cuda(), 10)
        assert found.indices.tolist() == want.indices.tolist(), (batch, index.plan_for(batch))
        assert torch.allclose(found.scores, want.values, atol=1e-5)
        for plan in every_plan(index):
            assert torch.equal(index.search_with_plan(torch.from_numpy(queries).cuda(), 10, None, plan)[1].cpu(), want.indices), (batch, plan)
    assert index.fallbacks == 0
    flag, exact = exact_sums.tf32_switch()
    saved = getattr(torch.backends.cuda.matmul, flag)
    try:  # a program that turned TF32 on (as training scripts do) still gets fp32's ranking from every plan
        setattr(torch.backends.cuda.matmul, flag, "tf32" if flag == "fp32_precision" else True)
        for plan in every_plan(index):
            index.use_plan(plan)
            assert torch.equal(index.search(torch.from_numpy(queries).cuda(), 10).indices, want.indices), plan
        assert getattr(torch.backends.cuda.matmul, flag) in ("tf32", True)  # and TF32 is back on after the search
    finally:
        setattr(torch.backends.cuda.matmul, flag, saved)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_grouped_first_pass_matches_plain_torch(precision, monkeypatch):
    "Blocks of at least GROUPED_FROM scores pick each step's candidates inside its best groups: still plain torch's ids."
    rng = np.random.default_rng(13)
    items, queries = unit(rng, 40_000, 32), unit(rng, 300, 32)
    ids = [str(j) for j in range(len(items))]
    left_out = [rng.choice(len(items), size=20, replace=False) for _ in range(len(queries))]
    index = ItemIndex(torch.from_numpy(items), ids, device="cpu", precision=precision, autotune=False)
    group_maxima, amax = [], torch.Tensor.amax
    monkeypatch.setattr(torch.Tensor, "amax", lambda self, *a, **kw: group_maxima.append(self.shape) or amax(self, *a, **kw))
    for plan in (Plan("two_pass", 16_384, 1 << 25), Plan("two_pass", 20_000, 300 * 20_000)):  # one step, two steps
        index.use_plan(plan)
        found = index.search(queries, 10, exclude=[[ids[p] for p in row] for row in left_out])
        assert torch.equal(found.indices, plain_torch(items, queries, 10, left_out).indices), plan
    assert len(group_maxima) == 3 and index.fallbacks == 0  # the grouped path ran once per step
