"The sequence model (recnb.train.sequence) on the real Amazon Beauty sequences: ids and attribute ids, no item text."
from recnb.data.datasets import load_dataset
from recnb.rank.evaluate import evaluate_recommendation, rec_rankers
from recnb.params import SequenceParams
from recnb.train.sequence import SequenceRanker, fit_sequence
from conftest import dataset_dir


def test_one_epoch_on_beauty_learns_from_ids_and_attributes(tmp_path):
    "One short epoch reads every shopper and the attribute file, saves a model that reads back, and already beats popularity."
    data = load_dataset("amazon-beauty", dataset_dir("amazon-beauty"))
    settings = SequenceParams(epochs=1, validate_every=1, dim=32, max_len=20, max_val_users=2000)
    sasrec = fit_sequence(data, tmp_path, settings)
    assert sasrec.info["train_sequences"] == len(data.sequences) == 22363
    assert tuple(sasrec.net.attribute_rows.shape) == (12102, 6)  # every item's category path and brand, up to 6 ids
    shoppers = data.split().valid[:2000]
    slice_ = type(data)(data.name, data.catalog, {u: data.sequences[u] for u, _, _ in shoppers})
    found = evaluate_recommendation(slice_, {**rec_rankers(data, ["popularity"]), "sasrec": sasrec}, "valid", ["ndcg@10"])
    assert found["sasrec"]["ndcg@10"] > found["popularity"]["ndcg@10"]
    again = SequenceRanker.load(tmp_path / "sequence")
    histories = [h for _, h, _ in shoppers[:50]]
    assert again.rank_histories(histories, k=10).ids == sasrec.rank_histories(histories, k=10).ids
    assert all(not set(ids) & set(h) for ids, h in zip(again.rank_histories(histories, k=50).ids, histories))
