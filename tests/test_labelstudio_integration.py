"""Against a real Label Studio server: push tasks, annotate as annotators would, pull and resolve.

One server serves the whole session (``label_studio_server`` in ``tests/ls_fixtures.py``,
started on a free port of 127.0.0.1 in a temporary data dir).  Without the server
venv these tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from active_learning.errors import LabelStudioAuthError, ProjectNotFound
from active_learning.ls_client import LabelStudioClient
from active_learning.ls_mapping import (
    annotation_result,
    build_task,
    parse_export,
    render_label_config,
    resolve_labels,
)
from anomaly_ssl.cli import cli

pytestmark = pytest.mark.labelstudio


def _record(i: int, score: float) -> dict:
    return {
        "sequence_id": f"user{i}:0",
        "entity_id": f"user{i}",
        "score": score,
        "threshold": 2.0,
        "is_anomaly": score >= 2.0,
        "events": [
            {"pos": p, "time": f"2026-03-02T10:00:{p:02d}", "gap": "1s", "event": e, "price": 5.0}
            for p, e in enumerate(["view_item", "add_to_cart", "payment_declined", "payment_declined"])
        ],
        "top_surprising": [{"pos": 3, "surprise": 5.0}],
        "neighbors": [{"sequence_id": "user99:1", "distance": 0.2, "summary": "view → cart → pay"}],
        "detector_contributions": {"knn": 1.0},
    }


def _tasks(n: int = 4) -> list[dict]:
    return [
        build_task(_record(i, 1.0 + i), model_version="it@1", pseudonymize_key="k", run_id="it")
        for i in range(n)
    ]


def test_project_uses_the_real_labeling_config(label_studio_project):
    client, project_id = label_studio_project
    title = client.sdk.projects.get(project_id).title
    config = render_label_config(["a", "b"])
    assert client.get_or_create_project(title, config) == project_id
    assert client.project_exists(project_id)


def test_push_annotate_export_and_resolve(label_studio_project):
    client, project_id = label_studio_project
    tasks = _tasks(4)
    ids = client.import_tasks(project_id, tasks)
    assert len(set(ids)) == 4
    second = client.create_user(f"annotator-{project_id}@example.com")
    seq = [t["data"]["sequence_id"] for t in tasks]
    # task 0: both say anomaly -> 1; task 1: disagree -> tie; task 2: both unsure + an empty annotation;
    # task 3: admin skips, the second annotator says normal -> 0
    client.create_annotation(ids[0], annotation_result("anomaly", "card_testing", "declines"), lead_time=4.0)
    client.create_annotation(ids[0], annotation_result("anomaly", "card_testing"), completed_by=second)
    client.create_annotation(ids[1], annotation_result("anomaly"))
    client.create_annotation(ids[1], annotation_result("normal"), completed_by=second)
    client.create_annotation(ids[2], annotation_result("unsure"))
    client.create_annotation(ids[2], annotation_result("unsure"), completed_by=second)
    client.create_annotation(ids[2], [], completed_by=second)
    client.create_annotation(ids[3], [], was_cancelled=True)
    client.create_annotation(ids[3], annotation_result("normal"), completed_by=second)

    export = client.export_annotated(project_id)
    records = parse_export(export, client.annotators())
    assert {r.annotator for r in records} == {
        "admin@anomaly-ssl.local",
        f"annotator-{project_id}@example.com",
    }
    assert len(records) == 7  # the skip and the empty annotation are dropped
    first = next(r for r in records if r.task_id == ids[0] and r.note)
    assert (first.note, first.lead_time, first.task_key) == ("declines", 4.0, tasks[0]["data"]["task_key"])

    resolved, unresolved = resolve_labels(records)
    assert resolved[seq[0]][:2] == (1, "card_testing")
    assert resolved[seq[3]][:2] == (0, None)
    assert {(u.sequence_id, u.reason) for u in unresolved} == {(seq[1], "tie"), (seq[2], "only_unsure")}
    # paging through the task list yields the same labels as the JSON export
    assert parse_export(client._export_by_paging(project_id), client.annotators()) == records


def test_pushing_twice_creates_no_duplicates(label_studio_project):
    client, project_id = label_studio_project
    ids = client.import_tasks(project_id, _tasks(3))
    client.create_annotation(ids[0], annotation_result("anomaly"))
    assert client.import_tasks(project_id, _tasks(5))[:3] == ids
    keys = client.existing_tasks(project_id)
    assert len(keys) == 5 and all(len(v) == 1 for v in keys.values())
    assert len(parse_export(client.export_annotated(project_id))) == 1  # the label survived


def test_timeout_in_the_middle_of_a_push_leaves_no_duplicates(label_studio_project, monkeypatch):
    client, project_id = label_studio_project
    client.chunk_size = 2
    real_import = client.sdk.projects.import_tasks
    calls = []

    def import_then_time_out(*args, **kwargs):
        calls.append(len(kwargs["request"]))
        response = real_import(*args, **kwargs)
        if len(calls) == 2:  # the server stored the 2nd chunk, but the answer never arrived
            raise httpx.ReadTimeout("timed out")
        return response

    monkeypatch.setattr(client.sdk.projects, "import_tasks", import_then_time_out)
    ids = client.import_tasks(project_id, _tasks(5))
    assert calls == [2, 2, 1]  # the 2nd chunk was not sent again
    assert len(set(ids)) == 5
    keys = client.existing_tasks(project_id)
    assert sorted(keys) == sorted(t["data"]["task_key"] for t in _tasks(5))
    assert all(len(v) == 1 for v in keys.values())


def test_wrong_token_is_an_auth_error(label_studio_server):
    client = LabelStudioClient(label_studio_server.url, "0" * 40, retries=0)
    with pytest.raises(LabelStudioAuthError, match=r"rejected the API key .*HTTP 401"):
        client.check()
    assert label_studio_server.client().check()["user"] == "admin@anomaly-ssl.local"


def test_deleted_project_raises_project_not_found(label_studio_server):
    client = label_studio_server.client()
    project_id = client.get_or_create_project("to-delete", render_label_config(["x"]))
    client.delete_project(project_id)
    assert not client.project_exists(project_id)
    with pytest.raises(ProjectNotFound, match=f"project {project_id} does not exist"):
        client.import_tasks(project_id, _tasks(1))
    with pytest.raises(ProjectNotFound):
        client.export_annotated(project_id)


def test_managed_server_state_and_cli(label_studio_server, monkeypatch):
    server = label_studio_server.server
    assert server.start().url == label_studio_server.url  # already running: reused, not restarted
    status = server.status()
    assert status.running and status.healthy and status.url == label_studio_server.url
    assert (server.token_path.stat().st_mode & 0o777) == 0o600
    assert label_studio_server.api_key not in server.state_path.read_text()
    assert label_studio_server.password not in server.state_path.read_text()
    runner = CliRunner()
    result = runner.invoke(cli, ["label-studio", "status", "--data-dir", str(label_studio_server.data_dir)])
    assert result.exit_code == 0 and "healthy" in result.output
    assert label_studio_server.api_key not in result.output
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio_server.api_key)
    result = runner.invoke(cli, ["label-studio", "check", "--url", label_studio_server.url])
    assert result.exit_code == 0 and "accepts the key" in result.output, result.output
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
    result = runner.invoke(cli, ["label-studio", "check", "--url", label_studio_server.url])
    assert result.exit_code == 1 and "rejected the API key" in result.output
