"""Probe a served GenTron Studio from outside, as docs/reliability.md reports it.

    python scripts/probe_studio.py                      # every part, on the built-in model
    python scripts/probe_studio.py --parts fuzz,load    # some: fuzz, isolation, load, memory, traversal, disk

fuzz: the bad values of tests/test_studio_shared.py to both public endpoints, through gradio_client and raw
HTTP JSON, counting clear refusals and correct results after. isolation: another precision asked through the
page's handler, then the seed-0 image and the load count. load: 16 users x 3 jobs submitted at once (served,
refused by the per-session limit, latency). memory: resident memory over 100 small generations. traversal:
path-traversal URLs against the file routes. disk: a real `python app.py` killed with SIGTERM, its temp
folders measured before and after. Prints one line per figure and a JSON summary last.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

QUICK = dict(frames=1, steps=4)  # a small image: the server is probed, not the model


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def client(url: str, **kwargs):
    from gradio_client import Client

    return Client(url, verbose=False, **kwargs)


def fuzz(url: str, demo, studio) -> dict:
    from gradio_client.exceptions import AppError

    from test_studio_shared import COMPARE_BAD, GENERATE_BAD, _expected, _finite, call

    good = {"generate": dict(prompt="a red circle", negative_prompt="", frames=1, resolution=None, steps=4,
                             text_guidance=7.5, motion_guidance=1.0, seed=0),
            "compare_motion": dict(prompt="a red circle", negative_prompt="", motion_guidances="0, 1", seed=0,
                                   frames=2, fps=4, resolution=None, steps=2, text_guidance=7.5, sampler=None)}
    good["compare_motion"]["sampler"] = studio.info().default_sampler
    c, out = client(url), {}
    for endpoint, cases in (("generate", GENERATE_BAD), ("compare_motion", COMPARE_BAD)):
        sent = clear = 0
        for name, value in cases:
            kwargs = {**good[endpoint], name: value}
            kind, message = call(url, endpoint, json.dumps({"data": list(kwargs.values())}))
            sent, clear = sent + 1, clear + (kind == "error" and _expected(name, value) in str(message))
            if _finite(value):
                sent += 1
                try:
                    c.predict(**kwargs, api_name=f"/{endpoint}")
                except AppError as e:
                    clear += _expected(name, value) in str(e)
        for body in (list(good[endpoint].values())[:1], [], [*good[endpoint].values(), 1]):
            kind, message = call(url, endpoint, body)
            sent, clear = sent + 1, clear + (kind == "error" and "this endpoint takes" in str(message))
        ok = call(url, endpoint, list(good[endpoint].values()))[0] == "complete"
        out[endpoint] = dict(kinds=len(cases) + 3, requests=sent, refused_clearly=clear, served_after=ok)
        print(f"fuzz /{endpoint}: {len(cases) + 3} kinds of bad input, {sent} requests, {clear} refused with the "
              f"field named; a good request after: {'served' if ok else 'FAILED'}")
    return out


def isolation(url: str, demo, studio) -> dict:
    import hashlib

    import numpy as np
    from PIL import Image

    from test_studio_shared import join, ui_generate_index

    bob = client(url)

    def image_hash() -> str:
        path = bob.predict(prompt="two blue stars", seed=0, api_name="/generate", **QUICK)[1]
        return hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest()[:16]

    before, loads = image_hash(), studio.loads
    index, others = ui_generate_index(demo), [m for m in studio.precisions() if m != studio.precision]
    refused = 0
    for i, mode in enumerate(others * 5):  # each other mode five times
        out = join(url, index, ["image", "two blue stars", "", 1, 4, None, 4, 7.5, 1.0, 0,
                                studio.info().default_sampler, mode, "same as the transformer"], session=f"a{i}")
        refused += out["success"] is False
    after = image_hash()
    res = dict(asked=len(others) * 5, refused=refused, image_before=before, image_after=after,
               reloads=studio.loads - loads)
    print(f"isolation: {res['asked']} requests for {', '.join(others)} refused {refused}; B's seed-0 image "
          f"{before} -> {after}; reloads {res['reloads']}")
    return res


def load(url: str, demo, studio, users: int = 16, per_user: int = 3) -> dict:
    clients = [client(url) for _ in range(users)]
    served, refused, waits, errors = [], [], [], []
    lock = threading.Lock()

    def one(u: int, k: int) -> None:
        sent = time.monotonic()
        try:
            clients[u].predict(prompt=f"{['a', 'two', 'three'][k]} red circles", seed=100 * u + k,
                               api_name="/generate", **QUICK)
        except Exception as e:  # noqa: BLE001: counted
            with lock:
                (refused if "each person may queue" in str(e) else errors).append((u, str(e)[:80]))
        else:
            with lock:
                served.append(u)
                waits.append(time.monotonic() - sent)

    threads = [threading.Thread(target=one, args=(u, k)) for k in range(per_user) for u in range(users)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits.sort()
    firsts = len(set(served))
    res = dict(users=users, jobs=users * per_user, served=len(served), refused=len(refused), errors=len(errors),
               users_served=firsts, seconds=round(time.monotonic() - started, 1),
               latency_median_s=round(waits[len(waits) // 2], 2), latency_max_s=round(waits[-1], 2))
    print(f"load: {users} users x {per_user} jobs at once: {res['served']} served, {res['refused']} refused by the "
          f"per-session limit, {res['errors']} other errors; {firsts} of {users} users served; latency median "
          f"{res['latency_median_s']} s, max {res['latency_max_s']} s; {res['seconds']} s in all")
    return res


def memory(url: str, demo, studio, n: int = 100) -> dict:
    c, marks = client(url), {}
    for i in range(n):
        c.predict(prompt=["a red circle", "two blue stars", "a big green square"][i % 3], seed=i,
                  api_name="/generate", **QUICK)
        if i + 1 in (10, 50, n):
            marks[i + 1] = round(rss_mib())
    import app

    res = dict(generations=n, rss_mib=marks, growth_10_to_n=round(marks[n] / marks[10], 3),
               result_folders=len(studio.runs()), cache_files=len(app.cache_files(demo)))
    print(f"memory: RSS after 10 / 50 / {n} generations {marks[10]} / {marks[50]} / {marks[n]} MiB "
          f"({res['growth_10_to_n']}x); result folders {res['result_folders']} (max_runs {studio.max_runs}), "
          f"cache files {res['cache_files']}")
    return res


TRAVERSAL = ["/etc/passwd", "../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd",
             "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "%252e%252e/%252e%252e/etc/passwd",
             "....//....//....//etc/passwd", "..\\..\\..\\etc\\passwd", "/etc/passwd%00.png",
             "%2fetc%2fpasswd", "//etc/passwd", "/proc/self/environ", "/proc/self/cmdline", "~/.bashrc",
             "file:///etc/passwd"]


def traversal(url: str, demo, studio) -> dict:
    own = client(url).predict(prompt="a red circle", api_name="/generate", **QUICK)[1]
    targets = [*TRAVERSAL, str(ROOT / "app.py"), str(ROOT / "assets" / "gentron-shapes" / "vae" / "config.json"),
               f"{studio.outputs_dir}/../../../etc/passwd", f"{Path(own).parent}/../../../../etc/passwd"]
    routes = ["gradio_api/file=", "file=", "gradio_api/file/"]
    extra = ["gradio_api/static/../../../../etc/passwd", "static/..%2f..%2f..%2fetc%2fpasswd",
             "assets/..%2f..%2f..%2fetc%2fpasswd", "gradio_api/proxy=http://127.0.0.1:1/",
             "gradio_api/proxy=file:///etc/passwd", "favicon.ico/../../etc/passwd",
             "gradio_api/stream/../../../etc/passwd", "gradio_api/file=" + urllib.parse.quote(str(ROOT / "README.md"))]
    tried, leaked = 0, []
    for target in targets:
        for route in routes:
            path = route + (target if "%" in target else urllib.parse.quote(target))
            r = httpx.get(url + path, timeout=10)
            tried += 1
            if r.status_code == 200 or "root:" in r.text or "import " in r.text:
                leaked.append((path, r.status_code))
    for path in extra:
        r = httpx.get(url + path, timeout=10)
        tried += 1
        if "root:" in r.text or "import " in r.text or "GenTron" in r.text and r.status_code == 200:
            leaked.append((path, r.status_code))
    good = httpx.get(url + "gradio_api/file=" + urllib.parse.quote(own), timeout=10)
    res = dict(tried=tried, served=len(leaked), leaked=leaked, own_result_status=good.status_code)
    print(f"traversal: {tried} URLs tried, {len(leaked)} served anything outside the app's folders "
          f"{leaked or ''}; the app's own result: HTTP {good.status_code}")
    return res


def disk(model: str | None, n: int = 20) -> dict:
    import socket

    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"TMPDIR": Path(tmp) / "tmp", "GRADIO_TEMP_DIR": Path(tmp) / "gradio"}
        for d in dirs.values():
            d.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
        cmd = [sys.executable, "app.py", "--port", str(port), "--device", "cpu", *(["--model", model] if model else [])]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                if httpx.get(url + "config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        c = client(url, download_files=False)
        for i in range(n):
            c.predict(prompt="a red circle", seed=i, frames=1, steps=10, api_name="/generate")
        upload = httpx.post(url + "gradio_api/upload", files={"files": ("a.bin", b"x" * 1024)}, timeout=10).status_code

        def measure() -> dict:
            files = [p for d in dirs.values() for p in d.rglob("*") if p.is_file()]
            return dict(files=len(files), kib=round(sum(p.stat().st_size for p in files) / 1024))

        serving = measure()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        after = measure()
    res = dict(generations=n, upload_status=upload, serving=serving, after_sigterm=after, exit_code=code)
    print(f"disk: after {n} generations {serving['files']} files ({serving['kib']} KiB) in the temp folders; "
          f"a 1 KiB upload: HTTP {upload}; after SIGTERM (exit {code}): {after['files']} files ({after['kib']} KiB)")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="as app.py --model (default: the built-in model)")
    p.add_argument("--parts", default="fuzz,isolation,load,memory,traversal,disk")
    args = p.parse_args()
    parts = args.parts.split(",")
    summary = {}
    served = [x for x in parts if x != "disk"]
    if served:
        import socket

        import app
        from gentron.studio import Studio

        studio = Studio(args.model, device="cpu")  # a temp outputs folder of its own, removed by close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo = app.serve(studio, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
        print(f"model {studio.info().name} at {studio.precision} on {studio.resolved_device}, {url}")
        try:
            for part in served:
                summary[part] = globals()[part](url, demo, studio)
        finally:
            demo.close()
            studio.close()
    if "disk" in parts:
        summary["disk"] = disk(args.model)
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
