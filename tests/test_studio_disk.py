"""A real `python app.py` server killed by SIGTERM and by SIGINT leaves nothing behind: neither the studio's output
folder nor the files gradio cached for it; and it takes no uploads."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from test_studio_shared import free_port, pipeline_dir  # noqa: E402,F401: a fixture

ROOT = Path(__file__).resolve().parent.parent


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def start_server(model: Path, tmp: Path) -> tuple[subprocess.Popen, str, dict]:
    """app.py on its own temp folders (TMPDIR for the studio's outputs, GRADIO_TEMP_DIR for gradio's cache)."""
    dirs = {"TMPDIR": tmp / "tmp", "GRADIO_TEMP_DIR": tmp / "gradio-cache"}
    for d in dirs.values():
        d.mkdir()
    port = free_port()
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1"}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(model), "--port", str(port), "--device", "cpu",
                             "--precision", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (tmp / "server.log").read_text()
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, "the server did not start"
        time.sleep(0.5)
    return proc, url, dirs


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_killed_server_removes_its_outputs_and_its_cache(pipeline_dir, tmp_path, sig):
    from gradio_client import Client

    proc, url, dirs = start_server(pipeline_dir, tmp_path)
    try:
        client = Client(url, verbose=False, download_files=False)  # the files stay on the server's side
        for seed in range(3):
            client.predict(prompt="a red circle", frames=1, steps=10, seed=seed, api_name="/generate")
        upload = httpx.post(url + "gradio_api/upload", files={"files": ("a.txt", b"hello")}, timeout=10)
        assert upload.status_code == 413  # the app has no upload control: nothing may land in its cache
        outputs = list(dirs["TMPDIR"].glob("gentron-studio-*"))
        cached = files_under(dirs["GRADIO_TEMP_DIR"])
        assert len(outputs) == 1 and files_under(outputs[0]) and len(cached) >= 3
        proc.send_signal(sig)
        assert proc.wait(timeout=60) in (0, 128 + sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "server.log").read_text()
    assert not list(dirs["TMPDIR"].glob("gentron-studio-*")), log
    assert not files_under(dirs["GRADIO_TEMP_DIR"]), log
    assert "Traceback" not in log, log
