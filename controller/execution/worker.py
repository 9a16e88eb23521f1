"""The runner: claims queued tasks and runs each in its own sandbox on a pool of threads.

One dispatcher thread claims work whenever a slot is free (woken by submissions and finished
tasks, and every second anyway, which also notices cancellations made by other processes).
Each task runs on a pool thread: create the sandbox, exec the command with output streamed to
the event log, record the outcome, remove the sandbox. Cancelling calls the sandbox's `stop()`
from another thread, which makes the blocked `exec` return at once.

Faults of the machine do not lose tasks. When the sandbox engine cannot be reached, a claimed
task goes back to the queue saying so, and nothing is claimed for a growing pause (1 s doubling
to 30 s), so the queue waits for the engine instead of failing task after task. While the data
directory's disk is below `min_free_mb` nothing is claimed; a running task whose read-write
folders' disk falls below it is stopped. The end of a task is stored again and again until the
database takes it, so a full disk never leaves a task `running` for good.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError

import sandbox
from controller.agent.services import AgentServices, SandboxStartFailed, backend_of
from controller.audit import AuditTrail
from controller.errors import FolderNotGranted
from controller.execution.disk import DiskGuard, LowSpace
from controller.execution.folders import plan_folders
from controller.execution.spec import command_spec
from controller.execution.stops import StopFindings, at_stop_of, left_behind
from controller.settings import Settings
from controller.store.models import Task, TaskKind, TaskStatus
from controller.store.network import NetworkLog
from controller.store.tasks import TaskStore, shutdown_reason
from sandbox import ExecResult, Network, Outcome, Sandbox, SandboxSpec, Stream
from sandbox.egress import EgressRecord
from sandbox.host.gitplant import GitScanIncomplete
from sandbox.host.setid import SetidScanIncomplete

if TYPE_CHECKING:
    from computer_use.agent.loop import AgentResult

log = logging.getLogger(__name__)

SandboxFactory = Callable[[str, SandboxSpec], Sandbox]
DISPATCH_POLL_S = 1.0
OUTPUT_FLUSH_S = 0.05
OUTPUT_EVENT_CHARS = 64 * 1024
LABEL_TASK = "dispatch.task"
ENGINE_RETRY_FIRST_S = 1.0
ENGINE_RETRY_MAX_S = 30.0
STORE_RETRY_FIRST_S = 0.25
STORE_RETRY_MAX_S = 5.0
ENGINE_NAMES = {"docker": "the Docker engine", "libvirt": "libvirtd"}


def lost_output_marker(chars: int) -> str:
    return f"\n[dispatch: {chars} characters of output were lost here: the disk was full]\n"


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
        self.lost_chars = 0
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
            if batch or (closed and self.lost_chars):
                self._write(batch)
            if closed:
                return

    def _write(self, batch: list[tuple[str, str]]) -> None:
        pieces = [
            (stream, text[i : i + OUTPUT_EVENT_CHARS])
            for stream, text in batch
            for i in range(0, len(text), OUTPUT_EVENT_CHARS)
        ]
        if self.lost_chars:
            # Where the gap is, so the reader knows the output is not whole.
            pieces.insert(0, (Stream.STDERR.value, lost_output_marker(self.lost_chars)))
        try:
            self._store.append_output(self._task, pieces)
        except Exception as exc:  # dropped, not retried: the task must go on and still end
            if not self.lost_chars:
                log.warning(
                    "could not store output of task %s (%s); dropping it", self._task.id, exc
                )
            self.lost_chars += sum(len(text) for _, text in batch)
            return
        self.lost_chars = 0


class Handle:
    """A task running here; `kill` stops its sandbox from any thread."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.cancelled = False
        self.interrupted = False
        self.disk_low: LowSpace | None = None
        self.timed_out = False  # an agent task past its timeout_s
        self.lost_chars = 0  # output that could not be stored, not even as a marker
        self.scan_problem: str | None = None  # what the searches at its sandbox's stop missed
        self.boxes: list[Sandbox] = []  # every sandbox it had (an agent task may have two)
        self._box: Sandbox | None = None
        self._lock = threading.Lock()

    def attach(self, box: Sandbox) -> bool:
        """Remember the sandbox; False when the task was already killed."""
        with self._lock:
            self._box = box
            self.boxes.append(box)
            return not self.stopping

    @property
    def stopping(self) -> bool:
        """Whether the task was told to stop, for any reason."""
        return bool(self.cancelled or self.interrupted or self.disk_low or self.timed_out)

    def kill(
        self, *, cancel: bool = False, disk_low: LowSpace | None = None, timed_out: bool = False
    ) -> None:
        """Stop the task: cancelled, its disk nearly full, timed out, or else a shutdown."""
        with self._lock:
            if cancel:
                self.cancelled = True
            elif disk_low is not None:
                self.disk_low = disk_low
            elif timed_out:
                self.timed_out = True
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
        disk: DiskGuard | None = None,
        agents: AgentServices | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.settings = settings
        self.agents = agents
        self.audit = audit
        self.store = store
        self.factory = factory
        self.disk = disk or DiskGuard(settings)
        self.slots = settings.max_concurrent_tasks
        self.engine = ENGINE_NAMES.get(
            settings.sandbox_backend, f"the {settings.sandbox_backend} engine"
        )
        # Why nothing is claimed now (the disk, the engine), for the log and for tests.
        self.paused: str | None = None
        self._disk_low = False
        self._engine_retry_s = 0.0
        self._engine_retry_at = 0.0
        self._running: dict[int, Handle] = {}
        self._ended = 0  # tasks ended here so far, for `wait_ended`
        self._unstored: set[int] = set()
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

    @property
    def ended(self) -> int:
        """How many tasks have ended here: read it, look at the tasks, then `wait_ended`."""
        with self._cond:
            return self._ended

    def wait_ended(self, seen: int, timeout_s: float) -> None:
        """Return once more than `seen` tasks have ended here, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._ended == seen and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def unstored(self, task_id: int) -> bool:
        """Whether the task has ended here but the database has not yet taken its end."""
        with self._cond:
            return task_id in self._unstored

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
        checked_at = 0.0
        while True:
            with self._cond:
                if self._stopping:
                    return
                free = self.slots - len(self._running)
            # Once a second, not on every wake-up: submissions wake this thread often.
            if time.monotonic() - checked_at >= DISPATCH_POLL_S:
                checked_at = time.monotonic()
                self._kill_requested()
                self._stop_where_disk_low()
            claimed = None
            if free > 0 and self._may_claim():
                try:
                    claimed = self.store.claim_next()
                except (OperationalError, OSError) as exc:  # the database is away or full
                    log.warning("could not claim the next task (%s); trying again shortly", exc)
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
                    self._cond.wait(DISPATCH_POLL_S)

    def _may_claim(self) -> bool:
        """False while the data directory's disk is nearly full or the engine is awaited."""
        low = self.disk.data_dir_low()
        if (low is not None) != self._disk_low:  # logged when it changes, not every second
            self._disk_low = low is not None
            if low is not None:
                log.warning("not starting tasks: the data directory %s", low.describe())
            else:
                log.warning("the data directory's disk has space again: starting tasks")
        if low is not None:
            self.paused = f"the data directory's disk is nearly full: {low.describe()}"
        elif time.monotonic() < self._engine_retry_at:
            self.paused = f"waiting for {self.engine}"  # `_wait_for_engine` logged why
        else:
            self.paused = None
        return self.paused is None

    def _stop_where_disk_low(self) -> None:
        with self._cond:
            handles = list(self._running.values())
        for handle in handles:
            if handle.disk_low is not None:
                continue
            writable = (Path(f["path"]) for f in handle.task.folders if f["mode"] == "rw")
            low = self.disk.first_low(writable)
            if low is not None:
                log.warning("stopping task %s: %s", handle.task.id, low.describe())
                handle.kill(disk_low=low)

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
        if self.audit is not None:
            self.audit.started(task.id, task.thread_id)
        try:
            if task.kind is TaskKind.AGENT:
                self._execute_agent(handle)
            else:
                self._execute(handle)
        except Exception as exc:  # a bug, not a task failure; still the task must end
            log.exception("task %s failed inside the controller", task.id)
            self._finish(handle, None, f"internal error in the controller: {exc}")
        finally:
            with self._cond:
                self._running.pop(task.id, None)
                self._ended += 1
                self._cond.notify_all()

    def _execute(self, handle: Handle) -> None:
        task = handle.task
        try:
            # Checked again: a symlink may have been pointed elsewhere since submission.
            plan = plan_folders(((f["path"], f["mode"]) for f in task.folders), self.settings)
        except FolderNotGranted as exc:
            self._finish(handle, None, f"refused before running: {exc.message}")
            return
        spec = command_spec(
            self.settings,
            plan,
            network=Network(task.network),
            allow=tuple(task.network_allow or ()),
            timeout_s=task.timeout_s,
            labels={LABEL_TASK: str(task.id)},
        )
        recorder: OutputRecorder | None = None
        box: Sandbox | None = None
        result: ExecResult | None = None
        error: str | None = None
        unreachable: Exception | None = None
        # Not started at all on a disk it would be stopped for a second later.
        low = self.disk.first_low(m.host for m in plan.mounts if not m.read_only)
        if low is not None:
            handle.kill(disk_low=low)
        try:
            box = self.factory(backend_of(task, self.settings), spec)
            # Backends with an egress proxy (Docker) report each request of network allowlist.
            watch_egress = getattr(box, "watch_egress", None)
            if spec.network is Network.ALLOWLIST and watch_egress is not None:
                watch_egress(self._egress_recorder(task))
            if handle.attach(box):
                try:
                    box.start()
                except (sandbox.EngineUnavailable, OSError) as exc:
                    unreachable = exc  # it never ran: it waits in the queue for the engine
                    raise
                self._engine_answered()
                self._note_sandbox(task.id, box.id)
                recorder = OutputRecorder(self.store, task)
                result = box.exec(
                    task.command,
                    timeout_s=task.timeout_s,
                    on_output=recorder.feed,
                    workdir=Path(spec.workdir) if spec.workdir else None,
                )
        except sandbox.SandboxError as exc:
            error = f"the sandbox failed: {exc}"
        except OSError as exc:
            # docker-py lets some lost connections through as requests' errors (OSErrors).
            error = f"the sandbox failed: lost the connection to {self.engine} ({exc})"
        finally:
            if recorder is not None:
                recorder.close()
                handle.lost_chars = recorder.lost_chars
            # Removed before the final state is recorded: a finished task has no sandbox left.
            if box is not None:
                try:
                    box.stop()
                except (GitScanIncomplete, SetidScanIncomplete) as exc:
                    # The task's folders could not all be searched.
                    result, error = None, f"the sandbox failed: {exc}"
                except Exception:  # docker-py lets a lost connection through unwrapped
                    log.exception("could not remove the sandbox of task %s", task.id)
                problem = getattr(box, "scan_problem_at_stop", None)
                if problem is not None:  # also when a cancel's stop() met it first
                    handle.scan_problem = problem
                    result, error = None, f"the sandbox failed: {problem}"
                # What a daemon of the task left after its command ended.
                late = getattr(box, "git_quarantined_at_stop", ())
                late_setid = getattr(box, "setid_stripped_at_stop", ())
                if (late or late_setid) and result is not None:
                    result = replace(
                        result,
                        git_quarantined=(*result.git_quarantined, *late),
                        setid_stripped=(*result.setid_stripped, *late_setid),
                    )
        if unreachable is not None and not handle.cancelled:
            self._wait_for_engine(handle, unreachable)
            return
        if result is not None and self.audit is not None:
            self.audit.command(
                task.id, task.thread_id, task.command, result.exit_code, result.outcome.value
            )
        self._finish(handle, result, error)

    def _execute_agent(self, handle: Handle) -> None:
        """Run an agent task (see controller.agent.runner) and record how it ended."""
        from computer_use.agent.loop import AgentOutcome  # the agent stack, for agents only

        task = handle.task
        if self.agents is None:
            self._finish(handle, None, "this controller was started without agent support")
            return
        try:
            plan = plan_folders(((f["path"], f["mode"]) for f in task.folders), self.settings)
        except FolderNotGranted as exc:
            self._finish(handle, None, f"refused before running: {exc.message}")
            return
        low = self.disk.first_low(m.host for m in plan.mounts if not m.read_only)
        if low is not None:
            handle.kill(disk_low=low)
        timer = threading.Timer(task.timeout_s, lambda: handle.kill(timed_out=True))
        timer.daemon = True
        timer.start()
        result: AgentResult | None = None
        error: str | None = None
        try:
            job = self.agents.job(
                task,
                plan,
                factory=self.factory,
                attach=handle.attach,
                cancelled=lambda: handle.stopping,
                on_sandbox=lambda box_id: self._note_sandbox(task.id, box_id),
                on_egress=self._egress_recorder(task),
            )
            result = job.run()
            self._engine_answered()
        except SandboxStartFailed as exc:
            if not handle.stopping:
                self._wait_for_engine(handle, exc.cause)
                return
            error = f"the sandbox failed to start: {exc.cause}"
        except sandbox.SandboxError as exc:
            error = f"the sandbox, its display or its browser failed: {exc}"
        finally:
            timer.cancel()
        if result is not None:
            self._store_until_done(
                "record the result of",
                task.id,
                self.store.record_agent_result,
                final_answer=result.final_answer,
                tokens_in=result.tokens_in,
                tokens_out=result.tokens_out,
                cost_usd=result.cost_usd,
            )
        # What the searches at its sandboxes' stop found or could not finish (the agent's
        # tools closed them): as for a command task, it does not end well then.
        stopped = at_stop_of(handle.boxes)
        handle.scan_problem = handle.scan_problem or stopped.problem
        if handle.timed_out and not handle.cancelled:
            self._end(
                handle,
                TaskStatus.FAILED,
                outcome=Outcome.TIMED_OUT.value,
                reason=f"timed out after {task.timeout_s:g} s; retry with a larger timeout_s"
                + stopped.said(),
            )
            return
        if handle.stopping or result is None:
            found = StopFindings(quarantined=stopped.quarantined, stripped=stopped.stripped)
            if not handle.stopping and error is None and stopped.said():
                self._finish(handle, None, stopped.failure())  # it names all of it
            else:
                self._finish(handle, None, error, also=found.said())
            return
        ok = result.outcome is AgentOutcome.SUCCEEDED and not stopped.said()
        self._end(
            handle,
            TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED,
            outcome=result.outcome.value,
            reason=None if ok else (stopped.failure() or result.reason),
        )

    def _egress_recorder(self, task: Task) -> Callable[[EgressRecord], None]:
        """Store each request of the task's sandbox as the proxy reports it (and event it)."""
        network_log = NetworkLog(self.store.db, self.store.events)

        def record(request: EgressRecord) -> None:
            try:
                network_log.add(task.id, request, thread_id=task.thread_id)
            except Exception:  # the log must not kill the proxy's reader; the task goes on
                log.exception("could not store a network request of task %s", task.id)
            if self.audit is not None:
                self.audit.network(task.id, task.thread_id, asdict(request))

        return record

    def _note_sandbox(self, task_id: int, sandbox_id: str) -> None:
        # Only shown to people; a task is not failed because its disk cannot take this.
        try:
            self.store.set_sandbox(task_id, sandbox_id)
        except (OperationalError, OSError) as exc:
            log.warning("could not record the sandbox of task %s (%s)", task_id, exc)

    def _engine_answered(self) -> None:
        with self._cond:
            if self._engine_retry_s:
                log.warning("%s answers again", self.engine)
            self._engine_retry_s = 0.0
            self._engine_retry_at = 0.0

    def _wait_for_engine(self, handle: Handle, exc: Exception) -> None:
        """Queue the task again and claim nothing for a while (1 s, doubling up to 30 s)."""
        with self._cond:
            delay = min(max(self._engine_retry_s * 2, ENGINE_RETRY_FIRST_S), ENGINE_RETRY_MAX_S)
            self._engine_retry_s = delay
            self._engine_retry_at = time.monotonic() + delay
        reason = None
        if not handle.interrupted:  # a shutdown leaves it queued, without a stale reason
            reason = f"waiting for {self.engine}: {exc}; retrying in {delay:g} s"
        log.warning("task %s waits: %s", handle.task.id, reason or exc)
        self._store_until_done("queue again", handle.task.id, self.store.unclaim, reason=reason)

    def _store_until_done(
        self, what: str, task_id: int, call: Callable[..., Any], **kw: Any
    ) -> None:
        """Retry a write the database refuses (its disk full, its server gone) until it takes it.

        Until then the task stays `running` in the database and holds its slot here. Only a
        shutdown gives up: the next start marks the task interrupted, so it is not lost.
        """
        delay = STORE_RETRY_FIRST_S
        try:
            while True:
                try:
                    call(task_id, **kw)
                    if delay != STORE_RETRY_FIRST_S:
                        log.warning("could %s task %s at last", what, task_id)
                    return
                except (OperationalError, OSError) as exc:
                    with self._cond:
                        self._unstored.add(task_id)
                        if self._stopping:
                            log.error(
                                "could not %s task %s (%s) before shutting down; the next "
                                "start marks it interrupted",
                                what,
                                task_id,
                                exc,
                            )
                            return
                        if delay == STORE_RETRY_FIRST_S:
                            log.warning(
                                "could not %s task %s (%s); retrying until the database takes it",
                                what,
                                task_id,
                                exc,
                            )
                        self._cond.wait(delay)
                    delay = min(delay * 2, STORE_RETRY_MAX_S)
        finally:
            with self._cond:
                self._unstored.discard(task_id)

    def _finish(
        self, handle: Handle, result: ExecResult | None, error: str | None, *, also: str = ""
    ) -> None:
        """`also`: what the searches at its sandboxes' stop found ("; ..."), for an agent task."""
        task = handle.task
        exit_code = result.exit_code if result else None
        # A task stopped early still says what the searches of its folders found, or missed.
        missed = (
            left_behind(result)
            + also
            + (f"; and {handle.scan_problem}" if handle.scan_problem else "")
        )
        if handle.cancelled:
            self._end(
                handle,
                TaskStatus.CANCELLED,
                exit_code=exit_code,
                outcome=Outcome.STOPPED.value,
                reason=f"cancelled while running; its sandbox was removed{missed}",
            )
        elif handle.disk_low is not None:
            self._end(
                handle,
                TaskStatus.FAILED,
                exit_code=exit_code,
                outcome=Outcome.STOPPED.value,
                reason=f"stopped: disk nearly full ({handle.disk_low.describe()}); free some "
                f"space and run `dispatch retry {task.id}`{missed}",
            )
        elif handle.interrupted:
            self._end(
                handle,
                TaskStatus.INTERRUPTED,
                exit_code=exit_code,
                outcome=Outcome.STOPPED.value,
                reason=shutdown_reason(task.id) + missed,
            )
        elif result is None:
            problem = handle.scan_problem
            unsaid = f"; and {problem}" if problem and problem not in (error or "") else ""
            self._end(handle, TaskStatus.FAILED, reason=(error or "") + also + unsaid or None)
        else:
            self._end(
                handle,
                TaskStatus.SUCCEEDED if result.ok else TaskStatus.FAILED,
                exit_code=result.exit_code,
                outcome=result.outcome.value,
                reason=None if result.ok else result.describe(),
            )

    def _end(self, handle: Handle, status: TaskStatus, **kw: Any) -> None:
        if handle.lost_chars:
            lost = f"{handle.lost_chars} characters of its output were lost: the disk was full"
            kw["reason"] = f"{kw['reason']}; {lost}" if kw.get("reason") else lost
        task_id = handle.task.id
        if self.audit is not None:
            self.audit.finished(task_id, handle.task.thread_id, status.value, kw.get("reason"))
        self._store_until_done("record the end of", task_id, self.store.finish, status=status, **kw)
