"""Tasks through the API with the fake sandbox: lifecycle, order, concurrency, cancel, retry."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import Api, wait_until


def test_submit_answers_202_at_once_and_the_task_runs_to_success(api: Api, workspace: Path) -> None:
    app_dir = workspace / "projects" / "app"
    task = api.submit(["echo", "hello"], folders=[{"path": str(app_dir), "mode": "rw"}])
    assert task["status"] == "queued" and task["id"] >= 1
    done = api.wait_task(task["id"])
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["output"] == [{"stream": "stdout", "text": "hello\n"}]
    assert done["started_at"] and done["finished_at"] and done["duration_s"] >= 0
    assert done["folders"] == [{"path": str(app_dir), "mode": "rw"}]
    box = api.factory.created[-1]
    assert [(m.host, m.read_only) for m in box.spec.mounts] == [(app_dir, False)]


def test_a_failing_command_fails_with_its_exit_code_and_a_reason(api: Api) -> None:
    done = api.wait_task(api.submit(["exit", "3"])["id"])
    assert (done["status"], done["exit_code"], done["outcome"]) == ("failed", 3, "exited")
    assert done["reason"] == "exited with status 3"


def test_timeout_fails_the_task_with_outcome_timed_out(api: Api) -> None:
    done = api.wait_task(api.submit(["sleep", "30"], timeout_s=0.2)["id"])
    assert done["status"] == "failed" and done["outcome"] == "timed_out"
    assert "timed out after 0.2 s" in done["reason"]


def test_output_is_persisted_while_the_command_still_runs(api: Api) -> None:
    task = api.submit(["stream", "200", "0.05"])
    seen = wait_until(lambda: api.task(task["id"])["output"], 5, "the first output")
    assert api.task(task["id"])["status"] == "running"
    assert seen[0]["text"].startswith("line 0\n")
    api.post(f"/api/v1/tasks/{task['id']}/cancel")


def test_tasks_of_one_thread_run_in_order_and_threads_run_concurrently(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(max_concurrent_tasks=2)
    ids = {name: [] for name in ("a", "b", "c")}  # type: dict[str, list[int]]

    def client(name: str) -> None:
        for _ in range(8):
            ids[name].append(api.submit(["sleep", "0.02"], thread=name)["id"])

    workers = [threading.Thread(target=client, args=(name,)) for name in ids]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done = {name: [api.wait_task(i, timeout_s=30) for i in ids[name]] for name in ids}
    intervals = []
    for name, tasks in done.items():
        assert all(t["status"] == "succeeded" for t in tasks)
        # Accepted in the order this client sent them, and run in that order, one at a time.
        assert [t["id"] for t in tasks] == sorted(t["id"] for t in tasks)
        for earlier, later in itertools.pairwise(tasks):
            assert earlier["finished_at"] <= later["started_at"], (name, earlier, later)
        intervals += [(t["started_at"], t["finished_at"]) for t in tasks]
    overlap = max(sum(1 for s, f in intervals if s <= at < f) for at, _ in intervals)
    assert overlap == 2  # threads ran side by side, never more than max_concurrent_tasks


def test_cancel_a_queued_task_and_it_never_runs(make_api: Callable[..., Api]) -> None:
    api = make_api(max_concurrent_tasks=1)
    blocker = api.submit(["sleep", "30"])
    queued = api.submit(["echo", "never"])
    api.wait_task(blocker["id"], ["running"])
    response = api.post(f"/api/v1/tasks/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    api.post(f"/api/v1/tasks/{blocker['id']}/cancel")
    assert api.wait_task(queued["id"])["started_at"] is None
    assert all(box.commands != [["echo", "never"]] for box in api.factory.created)


def test_cancel_a_running_task_kills_its_sandbox(api: Api) -> None:
    task = api.submit(["sleep", "30"])
    api.wait_task(task["id"], ["running"])
    response = api.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    done = response.json()
    assert done["status"] == "cancelled" and done["outcome"] == "stopped"
    assert done["duration_s"] < 10
    assert not api.factory.created[-1]._running


def test_cancel_a_finished_task_is_a_409(api: Api) -> None:
    task = api.wait_task(api.submit(["true"])["id"])
    response = api.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "task_finished"


def test_retry_queues_a_new_task_at_the_end_of_the_thread(api: Api) -> None:
    failed = api.wait_task(api.submit(["exit", "1"], thread="t")["id"])
    response = api.post(f"/api/v1/tasks/{failed['id']}/retry")
    assert response.status_code == 202
    again = response.json()
    assert again["id"] != failed["id"] and again["retry_of"] == failed["id"]
    assert again["thread_id"] == failed["thread_id"] and again["position"] > failed["position"]
    assert api.wait_task(again["id"])["status"] == "failed"
    assert api.task(failed["id"])["status"] == "failed"  # the original is left as it was


def test_retry_of_a_running_task_is_a_409(api: Api) -> None:
    task = api.submit(["sleep", "30"])
    api.wait_task(task["id"], ["running"])
    response = api.post(f"/api/v1/tasks/{task['id']}/retry")
    assert response.status_code == 409
    api.post(f"/api/v1/tasks/{task['id']}/cancel")


def test_folders_outside_the_grants_are_refused_with_422_naming_the_folder(
    api: Api, workspace: Path
) -> None:
    for path, mode in [
        (workspace / "elsewhere", "ro"),
        (workspace / "readonly", "rw"),
        (workspace / "projects" / "missing", "ro"),
        (Path.home() / ".ssh", "ro"),
    ]:
        response = api.post(
            "/api/v1/tasks",
            json={"command": ["true"], "folders": [{"path": str(path), "mode": mode}]},
        )
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "folder_not_granted"
        assert str(path) in error["message"]


def test_a_symlink_out_of_a_grant_is_refused(api: Api, workspace: Path) -> None:
    link = workspace / "projects" / "sneaky"
    link.symlink_to(workspace / "elsewhere")
    response = api.post(
        "/api/v1/tasks", json={"command": ["true"], "folders": [{"path": str(link), "mode": "ro"}]}
    )
    assert response.status_code == 422
    assert "sneaky" in response.json()["error"]["message"]


def test_folders_inside_a_grant_are_allowed_with_at_most_its_mode(
    api: Api, workspace: Path
) -> None:
    inner = workspace / "readonly" / "docs"
    inner.mkdir()
    task = api.submit(["true"], folders=[{"path": str(inner), "mode": "ro"}])
    assert task["folders"] == [{"path": str(inner), "mode": "ro"}]


def test_folders_lists_the_grants(api: Api, workspace: Path) -> None:
    response = api.get("/api/v1/folders")
    assert response.json() == [
        {"path": str(workspace / "projects"), "mode": "rw"},
        {"path": str(workspace / "readonly"), "mode": "ro"},
    ]


def test_timeout_above_the_limit_is_refused(make_api: Callable[..., Api]) -> None:
    api = make_api(max_task_timeout_s=60, default_task_timeout_s=30)
    response = api.post("/api/v1/tasks", json={"command": ["true"], "timeout_s": 61})
    assert response.status_code == 422
    assert "max_task_timeout_s" in response.json()["error"]["message"]


def test_threads_keep_an_ordered_history_of_messages_and_tasks(api: Api) -> None:
    response = api.post("/api/v1/threads", json={"name": "research"})
    assert response.status_code == 201
    thread = response.json()
    assert api.post("/api/v1/threads", json={"name": "research"}).status_code == 409
    api.post(f"/api/v1/threads/{thread['id']}/messages", json={"text": "first"})
    task = api.submit(["true"], thread="research")
    api.post(f"/api/v1/threads/{thread['id']}/messages", json={"text": "after"})
    detail = api.get(f"/api/v1/threads/{thread['id']}").json()
    kinds = [
        (item["type"], item.get("message", item.get("task"))["position"])
        for item in detail["history"]
    ]
    assert kinds == [("message", 0), ("task", 1), ("message", 2)]
    assert detail["history"][1]["task"]["id"] == task["id"]
    names = [t["name"] for t in api.get("/api/v1/threads").json()]
    assert "research" in names


def test_task_list_filters_by_thread_and_status(api: Api) -> None:
    one = api.wait_task(api.submit(["true"], thread="x")["id"])
    api.wait_task(api.submit(["false"], thread="y")["id"])
    listed = api.get("/api/v1/tasks", params={"thread_id": one["thread_id"]}).json()
    assert [t["id"] for t in listed] == [one["id"]]
    failed = api.get("/api/v1/tasks", params={"status": "failed"}).json()
    assert all(t["status"] == "failed" for t in failed) and failed


def test_metrics_count_tasks_in_prometheus_format(api: Api) -> None:
    api.wait_task(api.submit(["true"])["id"])
    text = api.get("/metrics").text
    assert 'dispatch_tasks{status="succeeded"} 1' in text
    assert "# TYPE dispatch_tasks_submitted_total counter" in text
