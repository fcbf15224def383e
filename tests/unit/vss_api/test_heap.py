"""`vss_api.heap`: after a burst of request-sized buffers is freed, the process's RSS comes back down, burst after
burst; without it the second burst's memory stays. Each case runs in a fresh interpreter (the setting is
process-wide and the first free is what raises glibc's dynamic threshold)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

BURSTS = textwrap.dedent("""
    import json, random, sys
    import numpy as np
    from vss_api.heap import return_large_buffers_to_the_os

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

    was_set = return_large_buffers_to_the_os() if sys.argv[1] == "on" else False
    base, after = rss_mb(), []
    for burst in range(3):  # 300 images of 224x224x3 float32 held at once, as a full queue holds them
        held = [np.ones((224, 224, 3), np.float32) for _ in range(300)]
        small = [bytearray(1000) for _ in range(3000)]  # small allocations between them, as parsing makes
        random.Random(burst).shuffle(held)
        del held[:]
        kept = small[::10]
        del small
        after.append(rss_mb())
    print(json.dumps({"set": was_set, "base": base, "after": after}))
""")


def bursts(mode: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", BURSTS, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_after_each_burst_of_request_sized_buffers_the_memory_goes_back_to_the_os() -> None:
    on = bursts("on")
    assert on["set"] is True
    base, after = on["base"], on["after"]
    assert isinstance(base, int) and isinstance(after, list)
    assert max(after) - base < 40, on  # the burst held ~180 MB


def test_without_it_the_memory_of_a_second_burst_stays_which_is_what_it_fixes() -> None:
    off = bursts("off")
    base, after = off["base"], off["after"]
    assert isinstance(base, int) and isinstance(after, list)
    assert after[-1] - base > 100, off


def test_an_operators_own_malloc_setting_is_left_alone() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "262144"}
    assert bursts("on", env)["set"] is False
