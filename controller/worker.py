"""The runner: claims queued tasks and runs each in its own sandbox on a pool of threads.

One dispatcher thread claims work whenever a slot is free (woken by submissions and finished
tasks, and every second anyway, which also notices cancellations made by other processes).
Each task runs on a pool thread: create the sandbox, exec the command with output streamed to
the event log, record the outcome, remove the sandbox. Cancelling calls the sandbox's `stop()`
from another thread, which makes the blocked `exec` return at once.
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sandbox
from controller.errors import FolderNotGranted
from controller.folders import plan_folders
from controller.settings import Settings
from controller.store.models import Task, TaskStatus
from controller.store.tasks import TaskStore, shutdown_reason
from sandbox import ExecResult, Network, Outcome, Sandbox, SandboxSpec, Stream
from sandbox.base import DEADLINE_GRACE_S

log = logging.getLogger(__name__)

SandboxFactory = Callable[[str, SandboxSpec], Sandbox]
DISPATCH_POLL_S = 1.0
OUTPUT_FLUSH_S = 0.05
OUTPUT_EVENT_CHARS = 64 * 1024
LABEL_TASK = "dispatch.task"


class OutputRecorder:
    """Collects output from the sandbox's reader thread and persists it every 50 ms.

    Batching keeps a chatty command from costing one transaction per line, while a crash
    loses at most the last 50 ms of output.
    """

    def __init__(self, store: TaskStore, task: Task) -> None:
        self._store = store
        self._task = task
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in Stream}
        self._pending: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"output-{task.id}", daemon=True)
        self._thread.start()

    def feed(self, stream: Stream, data: bytes) -> None:
        text = self._decoders[stream].decode(data)
        if text:
            self._add(stream, text)

    def _add(self, stream: Stream, text: str) -> None:
        with self._cond:
            if self._pending and self._pending[-1][0] == stream.value:
                self._pending[-1] = (stream.value, self._pending[-1][1] + text)
            else:
                self._pending.append((stream.value, text))
            self._cond.notify()

    def close(self) -> None:
        """Flush everything (including a partial character) and stop the flusher."""
        for stream, decoder in self._decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                self._add(stream, tail)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._closed:
                    # Let a burst accumulate, but wake early if the command ends.
                    self._cond.wait(OUTPUT_FLUSH_S)
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                self._write(batch)
            if closed and not batch:
                return

    def _write(self, batch: list[tuple[str, str]]) -> None:
        pieces = [
            (stream, text[i : i + OUTPUT_EVENT_CHARS])
            for stream, text in batch
            for i in range(0, len(text), OUTPUT_EVENT_CHARS)
        ]
        try:
            self._store.append_output(self._task, pieces)
        except Exception:  # the task must still finish even if the disk is full
            log.exception("could not store output of task %s", self._task.id)


class Handle:
    """A task running here; `kill` stops its sandbox from any thread."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.cancelled = False
        self.interrupted = False
        self._box: Sandbox | None = None
        self._lock = threading.Lock()

    def attach(self, box: Sandbox) -> bool:
        """Remember the sandbox; False when the task was already killed."""
        with self._lock:
            self._box = box
            return not (self.cancelled or self.interrupted)

    def kill(self, *, cancel: bool) -> None:
        with self._lock:
            if cancel:
                self.cancelled = True
            else:
                self.interrupted = True
            box = self._box
        if box is not None:
            try:
                box.stop()
            except sandbox.SandboxError:
                log.exception("could not stop the sandbox of task %s", self.task.id)


class Runner:
    """Runs queued tasks, at most `settings.max_concurrent_tasks` at a time."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        factory: SandboxFactory = sandbox.create,
    ) -> None:
        self.settings = settings
        self.store = store
        self.factory = factory
        self.slots = settings.max_concurrent_tasks
        self._running: dict[int, Handle] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="task")
        self._dispatcher = threading.Thread(target=self._dispatch, name="dispatcher", daemon=True)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def start(self) -> None:
        self._dispatcher.start()

    def wake(self) -> None:
        """Look for work now (called after a task is queued)."""
        with self._cond:
            # With every slot busy the dispatcher has nothing to do until a task ends.
            if len(self._running) < self.slots:
                self._cond.notify_all()

    def cancel(self, task_id: int) -> bool:
        """Kill a task running here; False when it is not running in this process."""
        with self._cond:
            handle = self._running.get(task_id)
        if handle is None:
            return False
        handle.kill(cancel=True)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop claiming, interrupt running tasks (their sandboxes are removed), and wait."""
        with self._cond:
            self._stopping = True
            handles = list(self._running.values())
            self._cond.notify_all()
        for handle in handles:
            handle.kill(cancel=False)
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout_s)
        self._pool.shutdown(wait=True)

    def _dispatch(self) -> None:
        woken = True
        while True:
            with self._cond:
                if self._stopping:
                    return
                free = self.slots - len(self._running)
            claimed = None
            if free > 0:
                try:
                    claimed = self.store.claim_next()
                except Exception:
                    log.exception("could not claim the next task; trying again shortly")
            if claimed is not None:
                with self._cond:
                    stopping = self._stopping
                    if not stopping:
                        handle = Handle(claimed)
                        self._running[claimed.id] = handle
                if stopping:
                    # Claimed just as shutdown began: it never started, so it stays queued.
                    self.store.unclaim(claimed.id)
                    return
                self._pool.submit(self._run, handle)
                continue
            with self._cond:
                if not self._stopping:
                    woken = self._cond.wait(DISPATCH_POLL_S)
            if not woken:
                # Once a second, not on every wake-up: submissions wake this thread often.
                self._kill_requested()

    def _kill_requested(self) -> None:
        with self._cond:
            ids = list(self._running)
        try:
            requested = self.store.cancel_requested(ids)
        except Exception:
            log.exception("could not read cancellation requests")
            return
        for task_id in requested:
            self.cancel(task_id)

    def _run(self, handle: Handle) -> None:
        task = handle.task
        try:
            self._execute(handle)
        except Exception as exc:  # a bug, not a task failure; still the task must end
            log.exception("task %s failed inside the controller", task.id)
            self._finish(handle, None, f"internal error in the controller: {exc}")
        finally:
            with self._cond:
                self._running.pop(task.id, None)
                self._cond.notify_all()

    def _execute(self, handle: Handle) -> None:
        task = handle.task
        try:
            # Checked again: a symlink may have been pointed elsewhere since submission.
            plan = plan_folders(((f["path"], f["mode"]) for f in task.folders), self.settings)
        except FolderNotGranted as exc:
            self._finish(handle, None, f"refused before running: {exc.message}")
            return
        spec = SandboxSpec(
            image=self.settings.sandbox_image,
            mounts=plan.mounts,
            network=Network(task.network),
            workdir=plan.requested[0].host if plan.requested else None,
            labels={LABEL_TASK: str(task.id)},
            user=plan.user,
            # Kept by the sandbox itself: it stops even if this controller is killed meanwhile.
            deadline_s=task.timeout_s + DEADLINE_GRACE_S,
        )
        recorder: OutputRecorder | None = None
        box: Sandbox | None = None
        result: ExecResult | None = None
        error: str | None = None
        try:
            box = self.factory(self.settings.sandbox_backend, spec)
            if handle.attach(box):
                box.start()
                self.store.set_sandbox(task.id, box.id)
                recorder = OutputRecorder(self.store, task)
                result = box.exec(
                    task.command,
                    timeout_s=task.timeout_s,
                    on_output=recorder.feed,
                    workdir=Path(spec.workdir) if spec.workdir else None,
                )
        except sandbox.SandboxError as exc:
            error = f"the sandbox failed: {exc}"
        finally:
            if recorder is not None:
                recorder.close()
            # Removed before the final state is recorded: a finished task has no sandbox left.
            if box is not None:
                try:
                    box.stop()
                except sandbox.SandboxError:
                    log.exception("could not remove the sandbox of task %s", task.id)
        self._finish(handle, result, error)

    def _finish(self, handle: Handle, result: ExecResult | None, error: str | None) -> None:
        task = handle.task
        if handle.cancelled:
            self.store.finish(
                task.id,
                TaskStatus.CANCELLED,
                exit_code=result.exit_code if result else None,
                outcome=Outcome.STOPPED.value,
                reason="cancelled while running; its sandbox was removed",
            )
        elif handle.interrupted:
            self.store.finish(
                task.id,
                TaskStatus.INTERRUPTED,
                exit_code=result.exit_code if result else None,
                outcome=Outcome.STOPPED.value,
                reason=shutdown_reason(task.id),
            )
        elif result is None:
            self.store.finish(task.id, TaskStatus.FAILED, reason=error)
        else:
            self.store.finish(
                task.id,
                TaskStatus.SUCCEEDED if result.ok else TaskStatus.FAILED,
                exit_code=result.exit_code,
                outcome=result.outcome.value,
                reason=None if result.ok else result.describe(),
            )
