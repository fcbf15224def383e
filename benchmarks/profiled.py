"""Run a Python module under pyinstrument with every thread sampled, not only the main one: the event
loop (main thread), the executor threads that decode and post-process, the batcher's runtime thread.

    python -m benchmarks.profiled --out DIR/predictor -m vss_predictors --model_path ...

SIGUSR1 drops what was sampled so far (start-up, warm-up), so the profile shows the load alone.
On exit (the module returns, or SIGTERM/SIGINT stop the server) it writes, per thread group (threads
named alike, e.g. `asyncio_0..7`, are merged): `<out>-<group>.txt` (call tree), `<out>-<group>-flat.txt`
(self time per function, the quickest answer to "where does the time go") and `<out>-<group>.html`.
Wall-clock sampling: an idle thread shows its time in the call it waits in (epoll, a queue's lock)."""

from __future__ import annotations

import argparse
import atexit
import re
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer
from pyinstrument.session import Session

_profilers: list[tuple[str, Profiler]] = []
_lock = threading.Lock()
_interval = 0.002


def _start_in_new_thread(frame: Any, event: str, arg: Any) -> None:
    sys.setprofile(None)
    profiler = Profiler(interval=_interval, async_mode="disabled")
    profiler.start()
    with _lock:
        _profilers.append((threading.current_thread().name, profiler))


def _session_of(profiler: Profiler) -> Session | None:
    """The samples so far. A profiler can only be stopped on its own thread, so for the other threads
    the session is built from the running profiler's records, as `Profiler.stop` builds it."""
    active = profiler._active_session
    if active is None:
        return profiler.last_session
    records = list(active.frame_records)
    return Session(frame_records=records, start_time=active.start_time,
                   duration=time.time() - active.start_time, min_interval=active.interval,
                   max_interval=active.interval, sample_count=len(records),
                   target_description=active.target_description, start_call_stack=active.start_call_stack,
                   cpu_time=0.0, sys_path=sys.path, sys_prefixes=Session.current_sys_prefixes())


def _reset(signum: int, frame: Any) -> None:
    with _lock:
        profilers = list(_profilers)
    now = time.time()
    for _, profiler in profilers:
        active = profiler._active_session
        if active is not None:
            active.frame_records.clear()
            active.start_time = now


def _group(thread_name: str) -> str:
    return re.sub(r"[-_]?\d+(_\d+)?$", "", thread_name) or "thread"


_written = False


def write_profiles(out: Path) -> list[Path]:
    global _written
    if _written:
        return []
    _written = True
    groups: dict[str, Session] = {}
    with _lock:
        profilers = list(_profilers)
    for name, profiler in profilers:
        session = _session_of(profiler)
        if session is None or not session.frame_records:
            continue
        group = _group(name)
        groups[group] = Session.combine(groups[group], session) if group in groups else session
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for group, session in groups.items():
        base = f"{out}-{group}"
        tree = ConsoleRenderer(unicode=False, color=False, time="percent_of_total",
                               processor_options={"filter_threshold": 0.005}).render(session)
        flat = ConsoleRenderer(unicode=False, color=False, flat=True, time="percent_of_total").render(session)
        Path(f"{base}.txt").write_text(tree)
        Path(f"{base}-flat.txt").write_text(flat)
        Path(f"{base}.html").write_text(HTMLRenderer().render(session))
        written += [Path(f"{base}.txt"), Path(f"{base}-flat.txt")]
    return written


def main() -> None:
    global _interval
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="path prefix of the profile files")
    parser.add_argument("--interval", type=float, default=0.002, help="sampling interval, seconds")
    parser.add_argument("-m", dest="module", required=True)
    args, rest = parser.parse_known_args()
    _interval = args.interval
    main_profiler = Profiler(interval=_interval, async_mode="disabled")
    with _lock:
        _profilers.append(("MainThread", main_profiler))
    threading.setprofile(_start_in_new_thread)
    atexit.register(write_profiles, args.out)
    signal.signal(signal.SIGUSR1, _reset)
    sys.argv = [args.module, *rest]
    main_profiler.start()
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        main_profiler.stop()
        write_profiles(args.out)


if __name__ == "__main__":
    main()
