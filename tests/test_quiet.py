"""A newcomer's first run says nothing alarming: the CLI's generation and the app's start print no warning or error
(progress bars allowed), and the optional quantization back ends are imported only for the modes that need them."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALARM = re.compile(r"warn|error|fail|unable|deprecat|traceback|exception|should be kept|cannot|could not", re.I)
PROGRESS = re.compile(r"\d+%\|.*\| *\d+/\d+ ")  # a tqdm bar: "57%|█████▋    | 4/7 [00:00<00:00, 18.62it/s]"
# as a user starts it: Python's default warning filters (no -W / PYTHONWARNINGS from the test run)
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "GRADIO_ANALYTICS_ENABLED": "False",
       "HF_HUB_OFFLINE": "1"}


def alarming(text: str) -> list[str]:
    """The lines of ``text`` (progress bars, redrawn with carriage returns, split out and dropped) that look like
    a warning or an error."""
    lines = [part.strip() for line in text.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and not PROGRESS.search(line) and ALARM.search(line)]


def test_the_alarm_filter_catches_what_it_should():
    assert alarming("Loading weights: 100%|██████████| 27/27 [00:00<00:00, 21480.69it/s]\n") == []
    assert alarming("W1207 site-packages/torch/utils/_pytree.py:630] ... is deprecated\n")
    assert alarming("Unable to import `torchao` Tensor objects.\n")
    assert alarming("x: 0%|  | 0/7 [00:00<?, ?it/s]\rThere are modules in GenTronTransformer that should be kept in "
                    "float32: []\n")


@pytest.mark.parametrize("quantize", ["none", "bf16"])
def test_cli_generation_prints_only_its_result(tmp_path, quantize):
    """One tiny generation with the built-in model (bf16: the parts load in bf16, nothing is cast afterwards)."""
    out = tmp_path / "x.png"
    proc = subprocess.run([sys.executable, "-m", "gentron", "generate", "--prompt", "a red circle", "--out", str(out),
                           "--steps", "2", "--resolution", "32", "--quantize", quantize], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert alarming(proc.stdout) == [] and alarming(proc.stderr) == []
    assert len(proc.stdout.splitlines()) == 1  # the result's JSON line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_start_prints_only_its_address_and_names_the_model(tmp_path):
    """``python app.py`` with the built-in model, up to gradio's "Running on local URL" line; the page's header
    names the model by its folder's name, never by its path on the server."""
    port = _free_port()
    log = tmp_path / "app.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=ENV, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "Running on" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as r:
            page = json.dumps(json.load(r))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text().partition("To create a public link")[0]  # the first screen, not the shutdown
    assert f"Running on local URL:  http://127.0.0.1:{port}" in text, text
    assert alarming(text) == [] and "HTTP Request" not in text  # nor gradio's probes of its own page
    assert "(model `gentron-shapes`)" in page and str(ROOT) not in page


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(sorted({m.split('.')[0] for m in "
                           "sys.modules} & {'torchao', 'bitsandbytes'}))"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert alarming(proc.stderr) == [], proc.stderr
    return set(eval(proc.stdout.strip().splitlines()[-1]))


def test_back_ends_are_imported_only_for_the_modes_that_need_them():
    assert _modules_after("from gentron.studio import precision_modes; assert 'int8' in precision_modes()") == set()
    load = "from gentron.loading import load_pipeline; load_pipeline(None, 'cpu', {!r})"
    assert _modules_after(load.format("bf16")) == set()
    assert _modules_after(load.format("int8")) == {"torchao"}


def test_a_model_is_named_without_its_server_path(tmp_path):
    from gentron.loading import model_label

    assert model_label(str(tmp_path / "my-model")) == "my-model"
    assert model_label("./runs/cpu17/shipped/") == "shipped"
    assert model_label("~/models/gentron") == "gentron"
    assert model_label("PixArt-alpha/PixArt-XL-2-512x512") == "PixArt-alpha/PixArt-XL-2-512x512"
    assert model_label("random:tiny") == "random:tiny"


def test_a_training_run_prints_no_back_end_alarm(tmp_path):
    """``python -m gentron train`` on the tiny config: progress and the final folder, no kernel-probe noise from
    quantization back ends that training never uses."""
    proc = subprocess.run([sys.executable, "-m", "gentron", "train", "--config", "configs/tiny_t2i.yaml",
                           "--steps", "2", "--output-dir", str(tmp_path / "run"), "--set", "mixed_precision=no"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert alarming(proc.stdout) == [] and alarming(proc.stderr) == [], proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "run" / "final")
