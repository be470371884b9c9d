"""The worker protocol of the panel (no Qt): progress, partial results, cancel, errors to the main thread."""
import threading
import time

from MedSAMLiteLib.worker import Task


def _wait_until(predicate, timeout=10.0):
    end = time.perf_counter() + timeout
    while not predicate():
        assert time.perf_counter() < end, "timed out"
        time.sleep(0.005)


def test_progress_partial_and_result():
    gate = threading.Event()

    def work(progress):
        progress(1, partial="middle slice")
        gate.wait(5)
        progress(2)
        return "mask"

    task = Task(work, total=3)
    _wait_until(lambda: task.progress.done == 1)
    assert task.running and task.partial() == "middle slice"
    assert task.partial() is None  # each partial is handed out once
    assert task.status().startswith("1/3 slices")
    gate.set()
    assert task.wait(5)
    assert (task.state, task.result, task.progress.done) == (Task.DONE, "mask", 3)


def test_cancel_stops_at_the_next_slice():
    calls = []

    def work(progress):
        for z in range(1000):
            calls.append(z)
            progress(1)
            time.sleep(0.001)
        return "never"

    task = Task(work, total=1000)
    _wait_until(lambda: len(calls) >= 3)
    task.cancel()
    assert task.wait(5)
    assert task.state == Task.CANCELLED and task.result is None and len(calls) < 1000


def test_an_exception_in_the_worker_reaches_the_main_thread():
    def work(progress):
        progress(1)
        raise RuntimeError("model file is corrupt\nsecond line")

    task = Task(work, total=2)
    assert task.wait(5)
    assert task.state == Task.FAILED and isinstance(task.error, RuntimeError)
