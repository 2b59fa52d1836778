"`recnb new` refuses a path it would damage, and commands outside a project look in the working directory itself."
import os, subprocess, sys


def recnb(*args, cwd):
    return subprocess.run([sys.executable, "-m", "recnb.cli", *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "BENTOML_HOME": str(cwd / "bentoml")})


def test_new_refuses_a_file_and_a_folder_with_files(tmp_path):
    (tmp_path / "afile").write_text("mine")
    out = recnb("new", tmp_path / "afile", cwd=tmp_path)
    assert out.returncode == 2 and "exists and is a file" in out.stderr and "Traceback" not in out.stderr, out.stderr
    (tmp_path / "full").mkdir(); (tmp_path / "full" / "notes.txt").write_text("mine")
    out = recnb("new", tmp_path / "full", cwd=tmp_path)
    assert out.returncode == 2 and "exists and is not empty" in out.stderr, out.stderr
    assert (tmp_path / "afile").read_text() == "mine" and os.listdir(tmp_path / "full") == ["notes.txt"]


def test_outside_a_project_build_looks_in_the_working_directory(tmp_path):
    here = tmp_path / "somewhere"; here.mkdir()
    out = recnb("build", cwd=here)
    assert out.returncode == 2 and f"no {here / 'bentos' / 'bentofile.yaml'}" in out.stderr, out.stderr
