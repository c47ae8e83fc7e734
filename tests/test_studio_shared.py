"""One studio served to many people: no request changes another's results or cost, every bad value is refused at
the edge with its field named (a fuzz over both public endpoints, through gradio_client and raw HTTP JSON), one
log line per refusal and no traceback, only the documented endpoints callable by name, a fair queue, /generate's
outputs plain values, the README's gradio_client examples, and a bounded cache.

The served app runs in this process on a tiny randomised pipeline; tests/test_studio_disk.py kills real servers.
"""
import copy
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

import app  # noqa: E402
from gentron.studio import LABELS, Studio  # noqa: E402
from test_model import _randomise  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(frames=1, steps=2)  # a tiny image: these tests are about the server, not the model
GOOD_GENERATE = dict(prompt="a red circle", negative_prompt="", frames=1, resolution=None, steps=2,
                     text_guidance=7.5, motion_guidance=1.0, seed=0)
GOOD_COMPARE = dict(prompt="a red circle", negative_prompt="", motion_guidances="0, 1", seed=0, frames=2, fps=4,
                    resolution=None, steps=2, text_guidance=7.5, sampler="ddim")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline_dir(tiny_pipeline, tmp_path_factory):
    pipe = copy.deepcopy(tiny_pipeline)
    _randomise(pipe.transformer)  # a trained-like model: its image depends on the seed and the precision
    path = tmp_path_factory.mktemp("shared-pipeline")
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def studio(pipeline_dir, tmp_path_factory):
    """A shared server's studio: the precision fixed at launch (fp32), no switching."""
    return Studio(str(pipeline_dir), device="cpu", outputs_dir=tmp_path_factory.mktemp("shared-outputs"),
                  precision="none")


@pytest.fixture(scope="module")
def server(studio):
    port = free_port()
    demo = app.serve(studio, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def new_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


# ---- raw HTTP: the simple call API and the page's own queue route --------------------------------
def call(url: str, name: str, body) -> tuple[str, object]:
    """POST /gradio_api/call/<name> with ``body`` (a list of values, or raw JSON text), then read the event
    stream: ("complete", data), ("error", message) or ("http <status>", text) when the POST itself is refused."""
    text = body if isinstance(body, str) else json.dumps({"data": body})
    r = httpx.post(f"{url}gradio_api/call/{name}", content=text, headers={"content-type": "application/json"},
                   timeout=30)
    if r.status_code != 200:
        return f"http {r.status_code}", r.text
    event_id = r.json()["event_id"]
    kind, data = None, None
    with httpx.stream("GET", f"{url}gradio_api/call/{name}/{event_id}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("complete", "error"):
                data = json.loads(line[6:])
                break
    if kind == "error":
        return "error", (data or {}).get("error") if isinstance(data, dict) else data
    return kind, data


def join(url: str, fn_index: int, data: list, session: str) -> dict:
    """What the browser does: POST /gradio_api/queue/join by function index, then read the session's stream up to
    the completed message."""
    r = httpx.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                      "event_data": None, "trigger_id": None}, timeout=30)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the stream ended without a result")


def ui_generate_index(demo) -> int:
    return next(i for i, fn in demo.fns.items() if fn.name == "generate")


def pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


# ---- 1. isolation ----------------------------------------------------------------------------------
def test_one_users_precision_request_changes_nobody_elses_image_or_cost(server, studio):
    """Client A asks the page's handler for other precisions (as a browser would, by index); B's seed-0 image
    is bit-identical before and after, and no request loads the model again."""
    demo, url = server
    bob = new_client(url)
    before = pixels(bob.predict(prompt="two blue stars", seed=0, api_name="/generate", **QUICK)[1])
    loads = studio.loads
    index = ui_generate_index(demo)
    ui_args = ["image", "two blue stars", "", 1, 4, None, 2, 7.5, 1.0, 0, "ddim"]
    for precision, towers in (("bf16", app.SAME_PRECISION), ("int8", app.SAME_PRECISION), ("none", "bf16")):
        out = join(url, index, [*ui_args, precision, towers], session=f"alice-{precision}-{towers}")
        assert out["success"] is False
        assert re.search(r"(Precision / quantization \(precision\)|Text encoders' precision \(text_precision\)) "
                         r"must be one of none; got", out["output"]["error"]), out
        assert "fixed when the server starts" in out["output"]["error"]
    accepted = join(url, index, [*ui_args, "none", "none"], session="alice-same")  # the launch's own mode runs
    assert accepted["success"] is True
    after = pixels(bob.predict(prompt="two blue stars", seed=0, api_name="/generate", **QUICK)[1])
    assert np.array_equal(before, after)
    assert studio.loads == loads and (studio.precision, studio.text_precision) == ("none", "none")


def test_only_the_documented_endpoints_are_callable_by_name(server):
    demo, url = server
    api = demo.get_api_info()["named_endpoints"]
    assert sorted(api) == ["/compare_motion", "/generate"]
    private = sorted({fn.api_name for fn in demo.fns.values()} - set(app.PUBLIC_ENDPOINTS))
    assert "ui_generate" not in private and len(private) >= 4  # the page's events: generate, stop, dice, mode
    for name in [*private, "ui_generate", "random_seed", "stop", "mode_changed", "api_generate"]:
        for route in ("gradio_api/call/", "gradio_api/call/v2/", "gradio_api/run/", "gradio_api/api/"):
            r = httpx.post(f"{url}{route}{name}", json={"data": []}, timeout=10)
            assert r.status_code == 404 and "this app's endpoints are /compare_motion, /generate" in r.text, (
                route, name, r.status_code)
    kind, data = call(url, "generate", list(GOOD_GENERATE.values()))
    assert kind == "complete" and data[1]["path"].endswith(".png")


def test_the_page_reaches_its_unqueued_events_and_no_model_event_skips_the_queue(server):
    # the page sends Stop, the dice and the mode by index to /gradio_api/run/predict; a model event sent
    # there would run beside the queue, so it is refused
    demo, url = server
    page_events = {"stop": [], "random_seed": [], "mode_changed": ["image"]}
    model_events = [i for i, fn in demo.fns.items() if fn.concurrency_id == app.MODEL_QUEUE]
    assert len(model_events) == 3  # the page's generate, the comparison (/compare_motion), /generate
    reached = set()
    for index, fn in demo.fns.items():
        name = fn.fn.__name__
        if index not in model_events and name not in page_events:
            continue
        data = page_events.get(name, [None] * len(fn.inputs))
        r = httpx.post(f"{url}gradio_api/run/predict", json={"fn_index": index, "data": data,
                                                             "session_hash": "page"}, timeout=30)
        if index in model_events:
            assert r.status_code == 404 and "join the queue" in r.text, (fn.api_name, r.status_code, r.text)
        else:
            assert r.status_code == 200, (name, r.status_code, r.text)
            reached.add(name)
    assert reached == set(page_events)


# ---- 2, 3. strict inputs at the edge, one log line each --------------------------------------------
NAN, INF = float("nan"), float("inf")
NOT_TEXT = [{"a": 1}, ["a red circle"], 5, 2.5, True, None]
NOT_INT = [2.5, "abc", "8", True, False, None, [8], {"v": 8}, NAN, INF, -INF, 1e300]
NOT_NUMBER = ["7.5", True, None, [7.5], {"v": 1}, NAN, INF, -1, 51]
GENERATE_BAD = [
    *[("prompt", v) for v in NOT_TEXT], ("prompt", ""), ("prompt", "   "), ("prompt", "a\x00b"),
    ("prompt", "a" * 2500), ("prompt", "red " * 40),
    *[("negative_prompt", v) for v in NOT_TEXT if v is not None], ("negative_prompt", "blue " * 40),
    *[("frames", v) for v in NOT_INT], ("frames", 0), ("frames", -1), ("frames", 65),
    *[("resolution", v) for v in NOT_INT if v is not None], ("resolution", 0), ("resolution", 30),
    ("resolution", -32), ("resolution", 4096),
    *[("steps", v) for v in NOT_INT if v is not None], ("steps", 0), ("steps", 501),  # None: the model's own
    *[("text_guidance", v) for v in NOT_NUMBER if v is not None],  # None: the model's own λT
    *[("motion_guidance", v) for v in NOT_NUMBER],
    *[("seed", v) for v in NOT_INT if v is not None], ("seed", -1), ("seed", 2**32),
]
COMPARE_BAD = [
    *[("prompt", v) for v in NOT_TEXT], ("prompt", ""),
    *[("motion_guidances", v) for v in ("zero, one", "", ",".join(["1"] * 9), "0, 99", "nan", [1, "a"], [True],
                                        5, None, {"a": 1}, [], "0; -1")],
    *[("frames", v) for v in NOT_INT], ("frames", 1), ("frames", 65),
    *[("fps", v) for v in ["4", True, None, [4], NAN, INF, 0, 61]],
    *[("resolution", v) for v in (0, 30, 2.5, "32", True)],
    *[("steps", v) for v in (0, 2.5, "2", True, NAN)],  # None: the model's own count
    *[("text_guidance", v) for v in NOT_NUMBER if v is not None],  # None: the model's own λT
    *[("sampler", v) for v in ("plms", 5, ["ddim"], True, "DDIM")],
    *[("seed", v) for v in (1.5, True, -1, 2**32, "0")],
]


def _finite(value) -> bool:
    """Whether JSON (and so gradio_client) can carry the value: NaN and infinities go by raw HTTP only."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _expected(name: str, value) -> str:
    """What the message must name: the control's label and the parameter; the engine's own messages about the
    text (empty, too long, control characters, too many tokens) name the parameter."""
    if name in ("prompt", "negative_prompt") and isinstance(value, str):
        return name
    return f"{LABELS[name]} ({name})"


@pytest.mark.parametrize("endpoint,good,cases", [("generate", GOOD_GENERATE, GENERATE_BAD),
                                                 ("compare_motion", GOOD_COMPARE, COMPARE_BAD)])
def test_fuzz_every_bad_value_is_refused_with_its_field_named(server, studio, endpoint, good, cases, caplog,
                                                               capfd):
    """Each bad value through gradio_client (where JSON carries it) and raw HTTP JSON (all of them, plus short
    and long value lists): a clear error naming the field, one log line, no traceback; a correct result right
    after each."""
    from gradio_client.exceptions import AppError

    _, url = server
    client = new_client(url)
    caplog.set_level(logging.INFO, logger="gentron")
    assert len(cases) >= 40
    refused = 0
    for i, (name, value) in enumerate(cases):
        kwargs = {**good, name: value}
        want = _expected(name, value)
        kind, message = call(url, endpoint, json.dumps({"data": list(kwargs.values())}))  # NaN as JSON's NaN
        assert kind == "error" and want in str(message), (name, value, kind, message)
        refused += 1
        if _finite(value):
            with pytest.raises(AppError) as e:
                client.predict(**kwargs, api_name=f"/{endpoint}")
            assert want in str(e.value), (name, value, str(e.value))
            refused += 1
        if i % 4 == 0 or i == len(cases) - 1:  # the server keeps serving: a correct result right after
            kind, data = call(url, endpoint, list(good.values()))
            assert kind == "complete", (name, value, data)
    for body in (list(good.values())[:1], [], [*good.values(), 1]):  # too few, none, one too many
        kind, message = call(url, endpoint, body)
        assert kind == "error" and f"this endpoint takes {len(good)} values" in message, (body, message)
        refused += 1
    kind, message = call(url, endpoint, '{"data": "a red circle"}')  # not a list at all: gradio's own 422
    assert kind == "http 422"
    result = client.predict(**good, api_name=f"/{endpoint}")
    assert result
    lines = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(lines) == refused and all("\n" not in r.getMessage() for r in lines)
    assert "Traceback" not in capfd.readouterr().err
    print(f"/{endpoint}: {len(cases)} kinds of bad value, {refused} refused requests, each logged in one line")


def test_a_real_fault_still_logs_its_traceback(server, studio, capfd, monkeypatch):
    """Refusals are quiet; a fault in the engine is not."""
    _, url = server

    def broken(*args, **kwargs):
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(studio, "generate", broken)
    kind, _ = call(url, "generate", list(GOOD_GENERATE.values()))
    assert kind == "error"
    assert "Traceback" in capfd.readouterr().err


# ---- 5. fairness -----------------------------------------------------------------------------------
def test_sixteen_clients_each_get_their_first_job_served(server, studio):
    """While one long job holds the model, 16 clients submit 3 jobs each: each may queue 2, the third is refused
    with the per-session message; when the long job ends every client's jobs are served."""
    _, url = server
    holder, clients = new_client(url), [new_client(url) for _ in range(16)]
    long_job = holder.submit(prompt="a big yellow star spinning", frames=8, steps=400, api_name="/generate")
    end = time.monotonic() + 60
    while not studio.busy:
        assert time.monotonic() < end
        time.sleep(0.02)
    jobs = {u: [] for u in range(16)}
    for k in range(3):
        for u, c in enumerate(clients):
            jobs[u].append(c.submit(prompt=f"{['a', 'two', 'three'][k]} red circles", seed=100 * u + k,
                                    api_name="/generate", **QUICK))
    time.sleep(1.0)
    long_job.cancel()
    served, refusals = {u: 0 for u in range(16)}, []
    for u in range(16):
        for job in jobs[u]:  # which of a client's three is the refused one is up to its threads' timing
            try:
                _, path = job.result(timeout=300)
            except Exception as e:  # noqa: BLE001: the refusal, checked below
                refusals.append(str(e))
            else:
                served[u] += Path(path).stat().st_size > 0
    assert all(n == 2 for n in served.values()), served  # every client served, none more than its share
    assert len(refusals) == 16 and all("each person may queue 2 at a time" in r for r in refusals), refusals[0]
    first = holder.predict(prompt="a red circle", api_name="/generate", **QUICK)  # the queue is free again
    assert first[1].endswith(".png")


# ---- 6. the API ------------------------------------------------------------------------------------
def test_generate_streams_plain_values(server):
    """(preview path, None) while sampling, then (None, the file): never a gradio update object."""
    _, url = server
    r = httpx.post(f"{url}gradio_api/call/generate", json={"data": [*list(GOOD_GENERATE.values())[:4], 10,
                                                                  7.5, 1.0, 3]}, timeout=30)
    event_id = r.json()["event_id"]
    events, kind = [], None
    with httpx.stream("GET", f"{url}gradio_api/call/generate/{event_id}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("generating", "complete"):
                events.append((kind, json.loads(line[6:])))
    assert "__type__" not in json.dumps(events)
    previews = [data for kind, data in events if kind == "generating" and data[1] is None]
    (kind, last), = [e for e in events if e[0] == "complete"]
    assert len(previews) >= 2 and all(p[0]["path"].endswith(".png") for p in previews)
    assert last[0] is None and last[1]["path"].endswith(".png")


def readme_client_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "gradio_client" in block]


def test_the_readmes_gradio_client_examples_run_as_written(server, tmp_path):
    _, url = server
    blocks = readme_client_examples()
    assert blocks, "the README has no gradio_client example"
    for block in blocks:
        code = block.replace("http://127.0.0.1:7860/", url)
        assert code != block  # the example names the default address, which this test replaces
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102: the project's own README
    assert Path(scope["video"]).suffix == ".mp4"


# ---- 4. a bounded cache ----------------------------------------------------------------------------
def test_the_cache_stays_bounded_while_serving(studio, tmp_path):
    """Each run leaves previews and results in gradio's cache; the app keeps only the newest
    max_runs x CACHE_FILES_PER_RUN of them."""
    small = Studio(studio.model, device="cpu", outputs_dir=tmp_path, max_runs=1, precision="none")
    small._pipe, small._pipe_modes = studio._pipe, studio._pipe_modes  # the loaded model, not a reload
    port = free_port()
    demo = app.serve(small, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = new_client(f"http://127.0.0.1:{port}/")
        made = set()
        for i in range(8):
            job = client.submit(prompt="a red circle", seed=i, frames=1, steps=10, api_name="/generate")
            job.result(timeout=120)
            made |= {str(p) for p in app.cache_files(demo)}
        bound = small.max_runs * app.CACHE_FILES_PER_RUN
        assert len(made) > 2 * bound  # without the trim the cache would hold them all
        assert len(app.cache_files(demo)) <= 2 * bound  # the bound, plus what the last run added
    finally:
        demo.close()
