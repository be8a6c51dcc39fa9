"""A small load test: several API clients at once against the app on localhost. Not a test: it prints figures.

    python -m cxr_demo.loadtest --clients 4 --seconds 60          # starts app.py itself on a free port
    python -m cxr_demo.loadtest --url http://127.0.0.1:7860/       # or an app that is already running
    python -m cxr_demo.loadtest --clients 2 --requests 200 --mix full   # memory after an afternoon of mixed clicks
    python -m cxr_demo.loadtest --clients 30 --images ../shared/data/cxr-3class   # every client its own films: no answer reused

Each client loops over the endpoints (classify, zeroshot, segment, and detect when the zoo has a detector; `--mix full` adds
Compare and a ScoreCAM heatmap) until the time or the request count is up. By default the clients click the examples, as a
class following its teacher does, so most answers come from the app's result memo; with `--images DIR` each client takes
its own films from DIR (one film per round of the tabs), which measures what the models themselves can serve. A film the
input check refuses counts as refused, not failed. The last line is one JSON object: requests, failures, refusals,
throughput, p50/p95 per endpoint and, for an app it started, the server's resident memory.
"""
from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from cxr_demo import zoo
from cxr_demo.io import examples
from cxr_demo.serve import running_app
from cxr_demo.ui.batch_rows import find_images

ENDPOINTS = {task: f"/{task}" for task in zoo.ENDPOINTS}
FULL_MIX = {"compare": "/compare", "scorecam": "/classify"}  # the heaviest clicks: four models at once, a heatmap of 320 passes


def request_args(endpoint: str) -> tuple:
    """The inputs after the image: ScoreCAM is the Classify endpoint with its slowest heatmap."""
    return (zoo.default("classify").name, "ScoreCAM") if endpoint == "scorecam" else ()


def server_memory_mb(pid: int) -> dict:
    """Resident and peak resident memory of a process, from /proc (Linux)."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"server_rss_mb": fields.get("VmRSS"), "server_peak_rss_mb": fields.get("VmHWM")}


REFUSED_TITLE = "Input check"  # the title of the message a refused film gets: the app working as meant, not a failure


class InputRefused(Exception):
    pass


class BrowserLikeClient:
    """What a browser tab does per click, over one kept-alive HTTP connection: upload the file, call the endpoint, read its
    event stream, fetch the output images. gradio_client opens new HTTP clients on every call and spent 120-200 ms of CPU
    per request doing it; on a 2-core box that shares the CPU with the app, the test then measured the load generator."""

    def __init__(self, url: str, defaults: dict[str, list]):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=300)
        self.defaults = defaults
        self.session = uuid.uuid4().hex  # one browser tab is one Gradio session: its state is set up once, not per click

    @staticmethod
    def endpoint_defaults(url: str) -> dict[str, list]:
        """Each named endpoint's default inputs, as the app's own API page lists them (the upload comes first)."""
        import httpx

        info = httpx.get(url.rstrip("/") + "/gradio_api/info", timeout=60).raise_for_status().json()
        return {name: [p.get("parameter_default") for p in endpoint["parameters"]] for name, endpoint in info["named_endpoints"].items()}

    def predict(self, image: str, *args, api_name: str) -> list:
        with open(image, "rb") as file:
            path = self.http.post("/upload", files={"files": (Path(image).name, file)}).raise_for_status().json()[0]
        data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, *args, *self.defaults[api_name][1 + len(args):]]
        event = self.http.post(f"/call{api_name}", json={"data": data, "session_hash": self.session}).raise_for_status().json()["event_id"]
        outputs = self._outcome(f"/call{api_name}/{event}")
        for url in output_urls(outputs):
            self.http.get(url).raise_for_status()
        return outputs

    def _outcome(self, stream_path: str) -> list:
        kind = None
        with self.http.stream("GET", stream_path) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = json.loads(line.partition(":")[2])
                    if kind == "error" and (payload or {}).get("title") == REFUSED_TITLE:
                        raise InputRefused(payload.get("error", ""))
                    if kind == "error":
                        raise RuntimeError(f"the app answered with an error: {payload}")
                    return payload
        raise RuntimeError("the event stream ended without a result")


def output_urls(value) -> list[str]:
    """Every file the answer points to (heatmaps, overlays, CSVs): a browser shows them, so it fetches them."""
    if isinstance(value, dict):
        return [value["url"]] if isinstance(value.get("url"), str) else [u for v in value.values() for u in output_urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in output_urls(v)]
    return []


def client_loop(url: str, defaults: dict[str, list], endpoints: list[str], pick_image, stop_at: float, record, more) -> None:
    client = BrowserLikeClient(url, defaults)
    i = 0
    while time.time() < stop_at and more():
        endpoint, image = endpoints[i % len(endpoints)], pick_image(i)
        start = time.perf_counter()
        try:
            client.predict(image, *request_args(endpoint), api_name={**ENDPOINTS, **FULL_MIX}[endpoint])
            record(endpoint, (time.perf_counter() - start) * 1000, None)
        except InputRefused as refusal:
            record(endpoint, (time.perf_counter() - start) * 1000, None, refused=str(refusal))
        except Exception as error:  # noqa: BLE001 - every failure counts, whatever it is
            record(endpoint, (time.perf_counter() - start) * 1000, f"{type(error).__name__}: {error}")
        i += 1


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--requests", type=int, help="stop after this many requests in all (default: only the time limit)")
    parser.add_argument("--mix", choices=("tabs", "full"), default="tabs", help="full: also Compare and a ScoreCAM heatmap")
    parser.add_argument("--url", help="an app that is already running (default: start app.py)")
    parser.add_argument("--images", type=Path, help="a folder of films (searched recursively): each client takes its own")
    args = parser.parse_args(argv)
    with nullcontext(None) if args.url else running_app(until_models_loaded=True) as app:
        if app:
            print(f"app answering after {app.ready_s} s, default models loaded after {app.models_loaded_s} s: the clock starts now")
        return report(args, run_clients(args, app.url if app else args.url), server_memory_mb(app.process.pid) if app else {})


def run_clients(args, url: str) -> tuple[dict[str, list[float]], list[str], list[str], float]:
    endpoints = [task for task in ENDPOINTS if zoo.names(task)] + (list(FULL_MIX) if args.mix == "full" else [])
    times: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def record(endpoint: str, ms: float, error: str | None, refused: str | None = None) -> None:
        with lock:
            times[endpoint].append(ms)
            if error:
                failures.append(f"{endpoint}: {error}")
            if refused:
                refusals.append(refused)

    def more() -> bool:
        with lock:
            return args.requests is None or sum(len(v) for v in times.values()) < args.requests

    defaults = BrowserLikeClient.endpoint_defaults(url)
    started = time.time()
    threads = [threading.Thread(target=client_loop, args=(url, defaults, endpoints[k:] + endpoints[:k], image_picker(args, k, len(endpoints)),
                                                          started + args.seconds, record, more))
               for k in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, failures, refusals, time.time() - started


def image_picker(args, client: int, rounds_of: int):
    """Request i's image for one client: the examples in turn, or with --images this client's own films, a new one
    each round of the tabs (a student uploads a film and opens every tab with it)."""
    if not args.images:
        images = examples.paths()
        return lambda i: images[i % len(images)]
    films = [str(p) for p in find_images(args.images)]
    if not films:
        raise SystemExit(f"no images under {args.images}")
    random.Random(0).shuffle(films)
    first = client * max(1, len(films) // args.clients)
    return lambda i: films[(first + i // rounds_of) % len(films)]


def report(args, outcome: tuple[dict[str, list[float]], list[str], list[str], float], memory: dict) -> dict:
    times, failures, refusals, elapsed = outcome
    total = sum(len(v) for v in times.values())
    result = {"clients": args.clients, "images": str(args.images or "examples"), "seconds": round(elapsed, 1), "requests": total,
              "failures": len(failures), "refused_by_input_check": len(refusals),
              "throughput_rps": round(total / elapsed, 2),
              "endpoints": {e: {"n": len(v), "p50_ms": round(float(np.percentile(v, 50)), 1), "p95_ms": round(float(np.percentile(v, 95)), 1)}
                            for e, v in times.items()},
              **memory, "first_failures": failures[:3]}
    for endpoint, row in result["endpoints"].items():
        print(f"{endpoint:<9} n={row['n']:<4} p50 {row['p50_ms']:7.0f} ms  p95 {row['p95_ms']:7.0f} ms (client-side, queue included)")
    print(f"{total} requests from {args.clients} clients in {elapsed:.0f} s: {result['throughput_rps']} req/s, {len(failures)} failed, "
          f"{len(refusals)} refused by the input check (a message, as designed)")
    if memory:
        print(f"server memory after them: {memory['server_rss_mb']} MB resident, {memory['server_peak_rss_mb']} MB at the peak")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
