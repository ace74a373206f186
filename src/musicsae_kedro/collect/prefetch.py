"""Run a stream in a background thread, a few items ahead of its consumer.

Collection overlaps the model's forward pass with the stores' writes and fsyncs this way.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

_END = object()
# Prefetch workers whose consumer has not closed them yet (see _stop_workers), and how
# long exit waits for one to finish the batch in flight.
_EXIT_JOIN_S = 300.0
_RUNNING: set[tuple[threading.Thread, threading.Event]] = set()


@atexit.register
def _stop_workers() -> None:
    """Stop and join workers a failed run left behind before the interpreter exits.

    When a node fails (e.g. a store cannot be written) its generator is never closed;
    a daemon worker still inside torch when the interpreter shuts down aborts the
    process ("terminate called without an active exception") instead of letting it
    exit with the error.
    """
    for thread, stop in list(_RUNNING):
        stop.set()
        thread.join(timeout=_EXIT_JOIN_S)  # a worker finishes its batch, then stops


def prefetched(stream: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``stream`` in a background thread, at most ``depth`` items ahead.

    The model's forward pass (which releases the GIL) then overlaps the consumer's
    HDF5 writes and fsyncs; items arrive in the stream's order, so commits (done by the
    consumer) keep their order and crash-safety. Closing this generator stops the thread.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> None:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for item in stream:
                put(("item", item))
                if stop.is_set():
                    return
            put(("end", _END))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(("error", exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="extract-prefetch", daemon=True)
    worker = (thread, stop)
    _RUNNING.add(worker)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a worker on a full queue
                items.get_nowait()
            thread.join(timeout=0.05)
        _RUNNING.discard(worker)
