"""The closed-loop load generator and the profile summary, driven without any server; the FastAPI peer's
sender against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.loadgen import TargetSpec, fastapi_sender, run_load, run_paired
from benchmarks.profile_served import busy_lines


def test_warmup_requests_are_sent_but_not_recorded() -> None:
    sent: list[bytes] = []
    lock = threading.Lock()

    def make() -> object:
        def send(frame: bytes) -> None:
            with lock:
                sent.append(frame)
        return send

    result = run_load(make, [b"a", b"b", b"c"], concurrency=3, requests=10, warmup=4, max_seconds=60)  # type: ignore[arg-type]
    assert len(sent) == 14
    assert len(result["latencies_s"]) == 10
    assert result["errors"] == 0
    assert not result["truncated"]
    assert sorted(set(sent)) == [b"a", b"b", b"c"]


def test_each_worker_keeps_the_client_it_made_on_its_own_thread() -> None:
    makers: list[int] = []
    users: set[tuple[int, int]] = set()

    def make() -> object:
        maker = threading.get_ident()
        makers.append(maker)

        def send(frame: bytes) -> None:
            users.add((maker, threading.get_ident()))
        return send

    run_load(make, [b"x"], concurrency=2, requests=6, warmup=2, max_seconds=60)  # type: ignore[arg-type]
    assert len(makers) == 2
    assert all(maker == user for maker, user in users)


def test_failed_requests_are_counted_with_the_first_reason() -> None:
    def make() -> object:
        def send(frame: bytes) -> None:
            if frame == b"bad":
                raise ValueError("bad frame")
        return send

    result = run_load(make, [b"ok", b"bad"], concurrency=1, requests=4, warmup=0, max_seconds=60)  # type: ignore[arg-type]
    assert result["errors"] == 2
    assert len(result["latencies_s"]) == 2
    assert result["first_error"] == "ValueError: bad frame"


def test_a_cell_past_its_time_limit_stops_and_says_it_was_cut_short() -> None:
    result = run_load(lambda: (lambda frame: None), [b"x"], concurrency=1, requests=1000, warmup=0,
                      max_seconds=0.0)
    assert result["truncated"]
    assert len(result["latencies_s"]) < 1000


def test_profile_summary_leaves_idle_waits_out_and_renormalises_the_rest() -> None:
    flat = """
  60.0% epoll.poll  <built-in>
  30.0% decode_image  vss_transformers/codecs.py:20
  10.0% letterbox  vss_transformers/letterbox.py:51
"""
    assert busy_lines(flat) == [(75.0, "decode_image  vss_transformers/codecs.py:20"),
                                (25.0, "letterbox  vss_transformers/letterbox.py:51")]


def test_paired_targets_take_turns_with_the_order_rotating_each_turn() -> None:
    calls: list[str] = []

    def sender(key: str) -> object:
        return lambda frame: calls.append(key)

    result = run_paired({"a": sender("a"), "b": sender("b"), "c": sender("c")}, [b"x"], requests=3,  # type: ignore[dict-item]
                        warmup=1, gap_s=0.0, max_seconds=60)
    assert calls == ["c", "a", "b", "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # warm-up turn first
    assert all(len(r["latencies_s"]) == 3 and not r["truncated"] for r in result.values())
    assert result["a"]["wall_s"] == sum(result["a"]["latencies_s"])


def test_a_failing_paired_target_is_counted_and_the_others_go_on() -> None:
    def fail(frame: bytes) -> None:
        raise RuntimeError("down")

    result = run_paired({"ok": lambda frame: None, "down": fail}, [b"x"], requests=2, warmup=0, gap_s=0.0,
                        max_seconds=60)
    assert (result["down"]["errors"], result["down"]["first_error"]) == (2, "RuntimeError: down")
    assert len(result["ok"]["latencies_s"]) == 2


@pytest.fixture()
def predict_server() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server answering POST /predict as the Ultralytics peer does (200 and boxes JSON), 500 to an
    empty body."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append(body)
            ok = self.path == "/predict" and body and self.headers["Content-Type"] == "image/jpeg"
            data = json.dumps({"boxes": [], "scores": []} if ok else {"detail": "bad"}).encode()
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_fastapi_sender_posts_the_jpeg_itself_and_refuses_a_failed_answer(
        predict_server: tuple[str, list[bytes]]) -> None:
    url, bodies = predict_server
    send = fastapi_sender(TargetSpec("fastapi", url), [b"jpeg-1"])()
    send(b"jpeg-1")
    send(b"jpeg-2")  # on the same kept-alive connection
    assert bodies == [b"jpeg-1", b"jpeg-2"]
    with pytest.raises(RuntimeError, match="HTTP 500"):
        send(b"")
