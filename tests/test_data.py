"Real datasets load with the published counts; every kind of broken input is refused with file, column and row."
import gzip, json, shutil
from pathlib import Path
import pandas as pd
import pytest
from recnb.data.bundles import split_queries
from recnb.data.datasets import load_dataset
from recnb.data.formats import load_judged_table, load_s3rec, load_unisrec, load_wands
from recnb.data.tables import DataError
from recnb.data.synthetic import synthetic
from conftest import dataset_dir


def test_homedepot_counts(homedepot):
    assert (len(homedepot.catalog), len(homedepot.queries), len(homedepot.judgements)) == (54_667, 11_795, 74_067)
    assert homedepot.judgements["gain"].between(0, 2).all()
    assert set(homedepot.queries["split"]) == {"train", "valid", "test"}
    # split by query: every query's judgements sit in one split
    assert homedepot.queries["query_id"].is_unique


def test_amazon_scientific_counts():
    sci = load_dataset("amazon-scientific", dataset_dir("amazon-scientific"))
    assert len(sci.sequences) == 8_442 and len(sci.catalog) == 4_385 and sci.n_interactions == 59_427
    assert all(sci.catalog.texts())
    split = sci.split()
    # leave-last-out matches the shipped valid/test files: user 0's test target is the item with index 13
    user0 = sci.sequences["0"]
    assert [t for u, _, t in split.test if u == "0"] == [user0[-1]] and len(user0) == 14


def test_amazon_beauty_counts():
    beauty = load_dataset("amazon-beauty", dataset_dir("amazon-beauty"))
    assert len(beauty.sequences) == 22_363 and len(beauty.catalog) == 12_101 and beauty.n_interactions == 198_502
    assert not beauty.catalog.has_text
    with pytest.raises(ValueError, match="no item text"): beauty.catalog.texts()


def test_wands_shared_copy_names_the_missing_file():
    with pytest.raises(DataError, match=r"product\.csv.*file not found"):
        load_dataset("wands", dataset_dir("wands"))


def _wands_copy(tmp_path: Path) -> Path:
    "WANDS files: the real query.csv plus a few products and labels written here (the real ones are not shipped)."
    shutil.copy(dataset_dir("wands") / "query.csv", tmp_path / "query.csv")
    (tmp_path / "product.csv").write_text("product_id\tproduct_name\tproduct_class\n1\tsalon chair, black\tMassage Chairs\n2\toak coffee table\tCoffee & Cocktail Tables\n")
    (tmp_path / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n1\t1\t2\tPartial\n2\t0\t2\tIrrelevant\n")
    return tmp_path


def test_wands_format(tmp_path):
    data = load_wands(_wands_copy(tmp_path))
    assert len(data.queries) == 480 and len(data.catalog) == 2
    assert data.qrels(min_gain=-1)["0"] == {"1": 2.0, "2": 0.0}


def test_synthetic_is_seeded_and_fast():
    import time
    start = time.perf_counter(); shop = synthetic(); elapsed = time.perf_counter() - start
    assert elapsed < 30, elapsed  # "builds in seconds"; generous bound for loaded CI machines
    def tables(s): return [s.search.catalog.items.to_csv(index=False), s.search.queries.to_csv(index=False),
                           s.search.judgements.to_csv(index=False), json.dumps(s.rec.sequences)]
    assert tables(synthetic(seed=3)) == tables(synthetic(seed=3))
    assert tables(synthetic(seed=3)) != tables(synthetic(seed=4))
    gains = shop.search.judgements.groupby("query_id")["gain"].max()
    assert (gains == 2).all(), "every synthetic query has at least one Exact item"


def test_split_queries_is_pure_function_of_seed():
    ids = [str(i) for i in range(500)]
    assert split_queries(ids, seed=5) == split_queries(ids, seed=5)
    with pytest.raises(ValueError, match="fractions"): split_queries(ids, (0.5, 0.6, 0.1))


# ---------- broken input: each case names the file, the column and an example row ----------

HEADER = "query,item_id,title,gain\n"
BROKEN_TABLES = {
    "missing column": ("query,item_id,gain\nsofa,1,2\n", "column 'title'", "missing column"),
    "empty text": (HEADER + "sofa,1,Grey Sofa,2\ncouch,2,  ,1\n", "column 'title'", "line 3"),
    "empty query": (HEADER + "sofa,1,Grey Sofa,2\n,2,Oak Table,1\n", "column 'query'", "line 3"),
    "bad gain": (HEADER + "sofa,1,Grey Sofa,two\n", "column 'gain'", "line 2"),
    "negative gain": (HEADER + "sofa,1,Grey Sofa,-1\n", "column 'gain'", "line 2"),
    "duplicate judgement": (HEADER + "sofa,1,Grey Sofa,2\nsofa,1,Grey Sofa,1\n", "column 'query+item_id'", "line 3"),
}


@pytest.mark.parametrize("case", BROKEN_TABLES)
def test_broken_judged_table(tmp_path, case):
    text, column, row = BROKEN_TABLES[case]
    path = tmp_path / "judged.csv"; path.write_text(text)
    with pytest.raises(DataError) as info: load_judged_table(path)
    message = str(info.value)
    assert str(path) in message and column in message and row in message, message


def test_judged_table_formats_and_gain_mapping(tmp_path):
    frame = pd.DataFrame({"q": ["sofa", "sofa", "lamp"], "sku": ["a", "b", "c"], "name": ["Grey Sofa", "Oak Table", "Brass Lamp"],
                          "label": ["Exact", "Irrelevant", "Partial"]})
    frame.to_parquet(tmp_path / "t.parquet"); frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    for file in ("t.parquet", "t.tsv"):
        data = load_judged_table(tmp_path / file, query="q", item_id="sku", text="name", grade="label",
                                 gains={"Exact": 2, "Partial": 1, "Irrelevant": 0})
        assert len(data.catalog) == 3 and sorted(data.judgements["gain"]) == [0, 1, 2]
    with pytest.raises(DataError, match="column 'label'.*Partial"):
        load_judged_table(tmp_path / "t.tsv", query="q", item_id="sku", text="name", grade="label", gains={"Exact": 2, "Irrelevant": 0})


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "judged.csv"
    path.write_bytes((HEADER + "sofa,1,Caf\xe9 Sofa,2\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"not utf-8 at byte \d+, line 2"): load_judged_table(path)
    assert len(load_judged_table(path, encoding="ISO-8859-1").catalog) == 1


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"): load_judged_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="train.csv.*file not found"): load_dataset("homedepot", tmp_path)


def _homedepot_copy(tmp_path: Path, edit) -> Path:
    "A small slice of the real Home Depot file with one edit applied."
    raw = pd.read_csv(dataset_dir("homedepot") / "train.csv.gz", encoding="ISO-8859-1", nrows=50, dtype=str)
    raw = edit(raw)
    raw.to_csv(tmp_path / "train.csv", index=False, encoding="ISO-8859-1")
    return tmp_path


@pytest.mark.parametrize("edit, column, problem", [
    (lambda d: d.drop(columns="relevance"), "relevance", "missing column"),
    (lambda d: d.assign(relevance=d["relevance"].where(d.index != 4, "7")), "relevance", "line 6"),
    (lambda d: d.assign(product_title=d["product_title"].where(d.index != 2, "")), "product_title", "line 4"),
    (lambda d: d.assign(search_term=d["search_term"].where(d.index != 9, " ")), "search_term", "line 11"),
    (lambda d: pd.concat([d, d.iloc[[3]]]), "search_term+product_uid", "duplicate"),
])
def test_broken_homedepot(tmp_path, edit, column, problem):
    folder = _homedepot_copy(tmp_path, edit)
    with pytest.raises(DataError) as info: load_dataset("homedepot", folder)
    message = str(info.value)
    assert "train.csv" in message and f"column '{column}'" in message and problem in message, message


def test_homedepot_is_latin1(tmp_path):
    # the real file is not UTF-8; read as declared it loads, and a UTF-8 reading would name the byte
    data = load_dataset("homedepot", dataset_dir("homedepot"))
    assert any("\xe5" in t for t in data.catalog.texts())


def _unisrec_copy(tmp_path: Path) -> Path:
    src = dataset_dir("amazon-scientific")
    for f in src.glob("Scientific.*"): shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_broken_unisrec(tmp_path):
    folder = _unisrec_copy(tmp_path)
    inter = folder / "Scientific.test.inter"
    lines = inter.read_text().splitlines()
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\t999999"
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Scientific.test.inter, column 'item_id'.*line 6"): load_unisrec(folder)
    _unisrec_copy(tmp_path)
    text = folder / "Scientific.text"
    rows = text.read_text().splitlines(); rows[3] = rows[3].split("\t")[0] + "\t"
    text.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"Scientific.text, column 'text': empty text.*line 4"): load_unisrec(folder)
    _unisrec_copy(tmp_path)
    rows = text.read_text().splitlines(); rows.append(rows[2])
    text.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"Scientific.text, column 'item_id': duplicate ids"): load_unisrec(folder)
    _unisrec_copy(tmp_path)
    (folder / "Scientific.valid.inter").unlink()
    with pytest.raises(DataError, match=r"Scientific.valid.inter: file not found"): load_unisrec(folder)
    _unisrec_copy(tmp_path)
    train = folder / "Scientific.train.inter"
    rows = train.read_text().splitlines(); rows[1] = rows[1].replace("\t0 1 2", "\t0 2 1", 1)
    train.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"history does not continue"): load_unisrec(folder)


def test_broken_s3rec(tmp_path):
    lines = (dataset_dir("amazon-beauty") / "Beauty.txt").read_text().splitlines()[:20]
    (tmp_path / "Beauty.txt").write_text("\n".join(lines + ["7 5 x 9"]) + "\n")
    with pytest.raises(DataError, match=r"Beauty.txt, column 'line'.*line 21"): load_s3rec(tmp_path)
    (tmp_path / "Beauty.txt").write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(DataError, match=r"column 'user_id': duplicate ids.*line 21"): load_s3rec(tmp_path)


def test_broken_wands(tmp_path):
    folder = _wands_copy(tmp_path)
    (folder / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n1\t1\t99\tPartial\n")
    with pytest.raises(DataError, match=r"label.csv, column 'product_id': names an unknown item.*line 3"): load_wands(folder)
    (folder / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tVery\n")
    with pytest.raises(DataError, match=r"label.csv, column 'label'.*Very"): load_wands(folder)
    (folder / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n")
    (folder / "product.csv").write_text("product_id\tproduct_name\n1\tchair\n1\ttable\n")
    with pytest.raises(DataError, match=r"product.csv, column 'product_id': duplicate ids.*line 3"): load_wands(folder)


def test_cli_data_summary_and_error(tmp_path):
    import subprocess, sys
    dataset_dir("homedepot")
    out = subprocess.run([sys.executable, "-m", "recnb.cli", "data", "homedepot"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["items"] == 54_667
    bad = subprocess.run([sys.executable, "-m", "recnb.cli", "data", "homedepot", "--path", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "train.csv" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_data_on_a_users_table(tmp_path):
    "`recnb data table --path FILE` loads one judged table; --seed picks the split; a bad grade names file, column and row."
    import subprocess, sys
    rows = "".join(f"query {q},{q * 10 + i},title {q} {i},{i % 3}\n" for q in range(40) for i in range(3))
    (tmp_path / "mine.csv").write_text("query,item_id,title,gain\n" + rows)
    def summary(seed):
        out = subprocess.run([sys.executable, "-m", "recnb.cli", "data", "table", "--path", str(tmp_path / "mine.csv"), "--seed", str(seed)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    first = summary(0)
    assert (first["name"], first["items"], first["queries"]) == ("mine", 120, 40)
    assert sum(first["queries_by_split"].values()) == 40
    assert any(summary(seed)["queries_by_split"] != first["queries_by_split"] for seed in (1, 2, 3))
    (tmp_path / "bad.csv").write_text("query,item_id,title,gain\nred sofa,1,Red Sofa,2\nblue lamp,2,Blue Lamp,x\n")
    bad = subprocess.run([sys.executable, "-m", "recnb.cli", "data", "table", "--path", str(tmp_path / "bad.csv")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert all(s in bad.stderr for s in ("bad.csv", "'gain'", "line 3", "≥ 0;"))


def test_a_public_table_without_ids_and_with_repeated_pairs_loads_from_the_command_line(tmp_path):
    "Home Depot's judgements as a user might export them: no product id, titles as the only item key, pairs judged twice."
    import subprocess, sys
    raw = pd.read_csv(dataset_dir("homedepot") / "train.csv.gz", encoding="latin-1")
    table = raw[["search_term", "product_title", "relevance"]].head(3000)
    table = pd.concat([table, table.head(5).assign(relevance=1.0)])  # the same (query, product) judged twice
    path = tmp_path / "judged.csv"; table.to_csv(path, index=False)
    args = [sys.executable, "-m", "recnb.cli", "evaluate", "table", "--path", str(path), "--rankers", "bm25",
            "--query-col", "search_term", "--item-id-col", "product_title", "--text-cols", "product_title",
            "--grade-col", "relevance", "--gain-offset", "-1"]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "duplicates='max', 'mean' or 'first'" in refused.stderr, refused.stderr
    assert "search_term+product_title" in refused.stderr and "Traceback" not in refused.stderr
    loaded = subprocess.run(args + ["--duplicates", "max"], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "bm25" in loaded.stdout
    data = load_judged_table(path, query="search_term", item_id="product_title", text="product_title", grade="relevance",
                             gain_offset=-1, duplicates="max")
    assert "item ids derived from the item text" in data.source
    assert len(data.judgements) == len(table.drop_duplicates(["search_term", "product_title"]))


def test_an_unknown_dataset_or_a_missing_path_is_a_parameter_problem():
    from recnb.params import ParamsError, validate_params
    with pytest.raises(ParamsError) as e:
        validate_params({"data": {"name": "home-depot"}, "train": {"epochs": "one"}})
    assert len(e.value.problems) == 2 and "unknown dataset 'home-depot'" in e.value.problems[0]
    with pytest.raises(ParamsError, match="does not exist"): validate_params({"data": {"name": "table", "path": "/no/such.csv"}})
    with pytest.raises(ParamsError, match="needs a path"): validate_params({"data": {"name": "table"}})
