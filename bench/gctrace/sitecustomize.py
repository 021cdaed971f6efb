"""Bench-only GC trace for a server process: `PYTHONPATH=bench/gctrace` + `GC_TRACE_FILE`.

Python imports `sitecustomize` at start-up, so a server started with this directory on
its PYTHONPATH times every collection through `gc.callbacks` (no cost to the product:
nothing of this is in promptrelay). A daemon thread writes `[wall time, generation,
pause seconds (wall), collected, CPU seconds of the thread]` rows to GC_TRACE_FILE
(JSON) every half second.
`GC_TRACE_THRESHOLD=a,b,c` applies `gc.set_threshold(a, b, c)` at start, to try
thresholds without a setting. `GC_TRACE_TYPES=1` (diagnosis only: it stalls the
process) also keeps the cyclic garbage (`gc.DEBUG_SAVEALL`) and writes, beside the
trace, `<file>.types.json`: the types of that garbage and of the oldest generation's
objects. Used by bench/tail.py.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections import Counter

_FILE = os.environ.get("GC_TRACE_FILE")
_rows: list[list[float]] = []
_started = [0.0, 0.0]


def _callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0], _started[1] = time.perf_counter(), time.thread_time()
        return
    pause, cpu = time.perf_counter() - _started[0], time.thread_time() - _started[1]
    _rows.append([time.time(), info.get("generation", 0), pause, info.get("collected", 0), cpu])


def _name(obj: object) -> str:
    if type(obj).__name__ in ("function", "coroutine", "frame"):
        code = getattr(obj, "__code__", None) or getattr(obj, "f_code", None)
        return f"{type(obj).__name__} {getattr(code, 'co_qualname', '?')}"
    if type(obj).__name__ == "cell":
        try:
            return f"cell of {_name(obj.cell_contents)}"  # type: ignore[attr-defined]
        except ValueError:
            return "cell (empty)"
    return type(obj).__qualname__


def _types(path: str) -> None:
    garbage = Counter(_name(x) for x in gc.garbage)
    gc.garbage.clear()
    old = Counter(type(x).__qualname__ for x in gc.get_objects(2))
    top = {"garbage": garbage.most_common(25), "gen2": old.most_common(25)}
    top["gen2_total"] = sum(old.values())  # type: ignore[assignment]
    with open(path + ".types.json", "a") as out:
        out.write(json.dumps(top) + "\n")


def _writer(path: str, types: bool) -> None:
    ticks = 0
    while True:
        time.sleep(0.5)
        ticks += 1
        if types and ticks % 10 == 0:
            _types(path)
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            out.write(json.dumps(list(_rows)))  # json.dump's Python encoder makes cycles
        os.replace(tmp, path)


if _FILE:
    threshold = os.environ.get("GC_TRACE_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
    types = os.environ.get("GC_TRACE_TYPES") == "1"
    if types:
        gc.set_debug(gc.DEBUG_SAVEALL)
    gc.callbacks.append(_callback)
    threading.Thread(target=_writer, args=(_FILE, types), daemon=True, name="gc-trace").start()
