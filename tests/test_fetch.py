"`recnb fetch` against a real HTTP server on loopback that mirrors the real dataset files: pinned checksums, no leftovers."
import os, shutil, sys
import pytest
from conftest import Process, dataset_dir, free_port, recnb_cli

pytestmark = pytest.mark.integration   # starts a server


def test_fetch_downloads_verified_files_and_refuses_a_tampered_mirror(tmp_path):
    beauty, scientific = dataset_dir("amazon-beauty"), dataset_dir("amazon-scientific")
    mirror = tmp_path / "mirror"   # a copy, so that one file can be tampered with
    for folder in (beauty, scientific): shutil.copytree(folder, mirror / folder.name)
    port = free_port()
    server = Process([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(mirror)],
                     dict(os.environ), tmp_path, tmp_path / "http.log", f"http://127.0.0.1:{port}/amazon-s3rec/README.md", timeout=30)
    try:
        url = f"http://127.0.0.1:{port}"
        fetched = tmp_path / "datasets"
        env = {**os.environ, "RECNB_DATASETS_DIR": str(fetched), "RECNB_DATA_MIRROR": url}
        for name, folder in (("amazon-beauty", beauty), ("amazon-scientific", scientific)):
            done = recnb_cli("fetch", name, env=env)
            assert done.returncode == 0, done.stderr
            for f in folder.iterdir():
                if f.name != "README.md": assert (fetched / folder.name / f.name).read_bytes() == f.read_bytes(), f
        summary = recnb_cli("data", "amazon-beauty", env=env)   # the loader reads what was fetched, from datasets_dir
        assert summary.returncode == 0 and '"users": 22363' in summary.stdout, summary.stdout + summary.stderr
        (mirror / "amazon-s3rec" / "Beauty.txt").write_text("1 2 3\n")
        refused = recnb_cli("fetch", "amazon-beauty", "--to", tmp_path / "other", env=env)
        assert refused.returncode == 2 and "Beauty.txt from http://127.0.0.1" in refused.stderr and "known hash" in refused.stderr, refused.stderr
        assert not (tmp_path / "other" / "Beauty.txt").exists()
    finally: server.stop()
    gated = recnb_cli("fetch", "homedepot", "--to", tmp_path / "hd", env=dict(os.environ))
    assert gated.returncode == 2 and "kaggle.com" in gated.stderr
