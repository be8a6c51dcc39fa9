"""The warm-up's priming pass: every tab's click runs once on a throw-away film, and no answer about it is kept."""
from __future__ import annotations

import numpy as np

from cxr_demo.io import examples, read_xray
from cxr_demo.io.recent import _PER_IMAGE
from cxr_demo.ui import warmup


def test_priming_runs_each_task_and_keeps_no_answer(monkeypatch):
    from cxr_demo.tasks import classify

    ran, predict = [], classify.predict
    monkeypatch.setattr(classify, "predict", lambda *a, **k: ran.append("classify") or predict(*a, **k))
    warmup.prime(("classify",))
    assert ran == ["classify"]
    assert all(not cache.items for cache in _PER_IMAGE)


def test_the_throwaway_film_is_no_example_and_exists_without_examples(tmp_path, monkeypatch):
    from cxr_demo.io.xray import fingerprint

    film = read_xray(warmup.throwaway_film(tmp_path))
    assert fingerprint(film.pixels) not in {fingerprint(read_xray(p).pixels) for p in examples.paths()}
    monkeypatch.setattr(examples, "paths", list)
    ramp = read_xray(warmup.throwaway_film(tmp_path)).pixels
    assert ramp.shape == (256, 256) and np.all(np.diff(ramp[:, 0]) >= 0)


def test_waiting_for_the_models_keeps_the_servers_log(tmp_path):
    """`running_app(until_models_loaded=True)` watches the server's output for the warm-up line and still hands it to `log`."""
    import io
    import urllib.request

    from cxr_demo import serve

    (tmp_path / "app.py").write_text(
        "import http.server, os, time\n"
        f"print({warmup.MODELS_LOADED!r}, flush=True)\n"
        "server = http.server.HTTPServer(('127.0.0.1', int(os.environ['GRADIO_SERVER_PORT'])), http.server.SimpleHTTPRequestHandler)\n"
        "server.serve_forever()\n")
    log = io.StringIO()
    with serve.running_app(log, timeout=30, root=tmp_path, until_models_loaded=True) as app:
        assert app.models_loaded_s is not None
        with urllib.request.urlopen(app.url, timeout=5) as answer:
            assert answer.status == 200
    assert warmup.MODELS_LOADED in log.getvalue()
