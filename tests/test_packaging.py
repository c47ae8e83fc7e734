"""Packaging and deployment: pyproject.toml agrees with requirements.txt, a built wheel holds the engine, the
`gentron` command and the built-in model, and the Space upload would send what a Space needs and nothing else."""
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("upload_space", ROOT / "scripts" / "upload_space.py")
upload_space = importlib.util.module_from_spec(spec)
spec.loader.exec_module(upload_space)


def _requirements(lines) -> dict[str, str]:
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.startswith("-")]
    return {r.name.lower().replace("_", "-"): str(r.specifier) for r in reqs}


def test_pyproject_pins_are_requirements_txt_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "all"}
    declared = _requirements(project["dependencies"] + [r for group in extras.values() for r in group])
    assert declared == _requirements((ROOT / "requirements.txt").read_text().splitlines())
    assert project["scripts"] == {"gentron": "gentron.cli:main"}


def test_the_wheel_holds_the_engine_the_command_and_the_model(tmp_path):
    """Built from a copy of the clone, as `pip install .` builds it (no network: the installed setuptools)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "runs", "outputs", "scratch", "build", "dist",
                                                             "*.egg-info", "__pycache__", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheels").glob("gentron-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    model = sorted(p.relative_to(ROOT / "assets").as_posix() for p in (ROOT / "assets" / "gentron-shapes").rglob("*")
                   if p.is_file())
    assert {f"gentron/builtin/{m}" for m in model} <= names
    assert {"gentron/cli.py", "gentron/jobs.py", "gentron/training/__main__.py", "gentron/evaluation/toy.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/", "runs/", "app.py")) for n in names)
    assert "gentron = gentron.cli:main" in entry_points


def test_the_installed_layout_finds_the_builtin_model(tmp_path):
    """gentron.loading picks the packaged copy when there is no clone around it."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "gentron", site / "gentron", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "assets" / "gentron-shapes", site / "gentron" / "builtin" / "gentron-shapes")
    proc = subprocess.run([sys.executable, "-c", "from gentron.loading import BUILTIN_MODEL; print(BUILTIN_MODEL)"],
                          cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == site / "gentron" / "builtin" / "gentron-shapes"


def test_space_upload_dry_run_sends_what_a_space_needs():
    proc = subprocess.run([sys.executable, "scripts/upload_space.py", "--repo-id", "someone/gentron-studio",
                           "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[:-1]]
    sent = {row[-1]: (int(row[0].replace(",", "")), row[1] == "lfs") for row in rows}
    meta = upload_space.front_matter(ROOT / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] in sent and (ROOT / meta["app_file"]).is_file()
    assert "requirements.txt" in sent and ".gitattributes" in sent
    index = json.loads((ROOT / "assets/gentron-shapes/model_index.json").read_text())
    for part, spec in index.items():
        if isinstance(spec, list):
            assert any(p.startswith(f"assets/gentron-shapes/{part}/") for p in sent), part
    weights = [p for p in sent if p.endswith(".safetensors")]
    assert len(weights) == 4 and all(sent[p][1] for p in weights)  # through LFS
    assert all(lfs for size, lfs in sent.values() if size > upload_space.LFS_LIMIT)
    assert not any(p.startswith(("runs/", "outputs/", ".git/")) or "__pycache__" in p or p.endswith(".pyc")
                   for p in sent)
    assert proc.stdout.splitlines()[-1].startswith(f"{len(rows)} files, ")


def _space(tmp_path: Path, readme: str = "---\nsdk: gradio\napp_file: app.py\n---\n# x\n") -> Path:
    root = tmp_path / "space"
    for rel, data in {"README.md": readme, "app.py": "", "requirements.txt": "torch\n",
                      ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                      "assets/gentron-shapes/model_index.json": "{}", "runs/a/final/model.safetensors": "x",
                      "outputs/run-1/result.png": "x", "gentron/__pycache__/cli.cpython-311.pyc": "x",
                      ".gradio/flagged/x": "x", "gentron/cli.py": ""}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data)
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        (root / f"assets/gentron-shapes/{part}").mkdir(parents=True, exist_ok=True)
        (root / f"assets/gentron-shapes/{part}/model.safetensors").write_bytes(b"0")
    return root


def test_the_plan_leaves_out_runs_outputs_and_caches(tmp_path):
    sent = [path for path, _, _ in upload_space.plan(_space(tmp_path))]
    assert "app.py" in sent and "gentron/cli.py" in sent and "assets/gentron-shapes/vae/model.safetensors" in sent
    assert not [p for p in sent if p.startswith(("runs/", "outputs/", ".gradio/")) or p.endswith(".pyc")]


@pytest.mark.parametrize("change,message", [
    (lambda r: (r / "README.md").write_text("# no front matter\n"), "has no front matter"),
    (lambda r: (r / "README.md").write_text("---\nsdk: [gradio\n---\n"), "front matter is not valid YAML"),
    (lambda r: (r / "README.md").write_text("---\nsdk: docker\n---\n"), "this app needs sdk: gradio"),
    (lambda r: (r / "app.py").unlink(), "app.py is not in the upload"),
    (lambda r: (r / "requirements.txt").unlink(), "requirements.txt is not in the upload"),
    (lambda r: (r / "assets/gentron-shapes/vae/model.safetensors").unlink(), "the built-in model"),
    (lambda r: (r / "big.bin").write_bytes(b"0" * (upload_space.LFS_LIMIT + 1)), "match no LFS pattern"),
])
def test_the_plan_refuses_a_folder_unfit_for_a_space(tmp_path, capsys, change, message):
    root = _space(tmp_path)
    change(root)
    with pytest.raises(ValueError, match=message):
        upload_space.plan(root)
    assert upload_space.main(["--repo-id", "someone/x", "--dry-run", "--root", str(root)]) == 2
    assert message in capsys.readouterr().err
