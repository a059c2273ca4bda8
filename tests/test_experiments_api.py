"""The experiments API end to end over HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging

from support import assert_error, experiment_body


def create(client, **overrides):
    response = client.post("/experiments", json=experiment_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def test_create_returns_the_experiment_owned_by_the_caller(alice):
    body = experiment_body(owner_id="mallory", metadata={"tags": ["a"]})
    response = alice.post("/experiments", json=body)

    assert response.status_code == 201
    created = response.json()
    assert created["owner_id"] == "alice"
    assert created["status"] == "CREATED"
    assert created["parameters"] == body["parameters"]
    assert created["metadata"] == {"tags": ["a"]}
    assert response.headers["Location"].endswith(created["id"])

    fetched = alice.get(f"/experiments/{created['id']}").json()
    assert fetched == created


def test_each_parameter_set_becomes_a_task_with_quoted_values(alice):
    created = create(
        alice,
        parameters=[
            {"id": "p1", "values": {"alpha": "1", "beta": "$(touch /tmp/pwned); rm -rf ~"}},
        ],
    )

    tasks = alice.get(f"/experiments/{created['id']}/tasks").json()

    assert tasks["total"] == 1
    task = tasks["tasks"][0]
    assert task["status"] == "CREATED"
    assert task["command"] == "echo 1 '$(touch /tmp/pwned); rm -rf ~'"
    assert task["metadata"]["parameter_set_id"] == "p1"


def test_other_users_experiments_are_invisible_but_admins_see_all(alice, bob, admin):
    created = create(alice)

    assert_error(bob.get(f"/experiments/{created['id']}"), 404)
    assert_error(bob.delete(f"/experiments/{created['id']}"), 404)
    assert bob.get("/experiments").json()["total"] == 0
    assert admin.get(f"/experiments/{created['id']}").status_code == 200
    assert admin.get("/experiments").json()["total"] == 1


def test_list_paginates_newest_first_and_filters(alice):
    ids = [create(alice, name=f"e{i}", project_id="a" if i % 2 else "b")["id"] for i in range(5)]

    page = alice.get("/experiments", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [e["id"] for e in page["experiments"]] == [ids[3], ids[2]]
    # Pages leave out the parameter sets (megabytes for big sweeps); one experiment has them.
    assert "parameters" not in page["experiments"][0]
    assert len(alice.get(f"/experiments/{ids[3]}").json()["parameters"]) == 2

    only_a = alice.get("/experiments", params={"project_id": "a"}).json()
    assert {e["name"] for e in only_a["experiments"]} == {"e1", "e3"}


def test_bad_paging_and_status_are_400(alice):
    for params in (
        {"limit": 101},
        {"limit": 0},
        {"offset": -1},
        {"offset": 2**64},
        {"limit": "x"},
        {"status": "DONE"},
    ):
        body = assert_error(alice.get("/experiments", params=params), 400)
        assert body["details"]["field"] in params


def test_validation_names_the_field(alice):
    cases = [
        ({"project_id": "p", "command_template": "x"}, "name"),
        (experiment_body(name=""), "name"),
        (experiment_body(name="n" * 256), "name"),
        (experiment_body(parameters=[{"id": "p", "values": {"a": 1}}]), "parameters[0].values.a"),
        (experiment_body(parameters=[{"values": {}}]), "parameters[0].id"),
        (experiment_body(deadline="tomorrow"), "deadline"),
        (experiment_body(allowed_compute_types="gpu"), "allowed_compute_types"),
        (experiment_body(metadata={"tags": "x"}), "metadata.tags"),
    ]
    for body, field in cases:
        error = assert_error(alice.post("/experiments", json=body), 400)
        assert error["details"]["field"] == field, (field, error)
        assert field in error["message"]
    assert alice.get("/experiments").json()["total"] == 0


def test_missing_placeholder_is_a_400_naming_the_set(alice):
    body = experiment_body(
        parameters=[
            {"id": "ok", "values": {"alpha": "1", "beta": "2"}},
            {"id": "short", "values": {"alpha": "1"}},
        ]
    )
    error = assert_error(alice.post("/experiments", json=body), 400)
    assert "short" in error["message"] and "beta" in error["message"]


def test_duplicate_set_ids_and_bad_json_are_rejected(alice):
    body = experiment_body(parameters=[{"id": "a", "values": {"alpha": "1", "beta": "2"}}] * 2)
    assert "duplicate" in assert_error(alice.post("/experiments", json=body), 400)["message"]
    error = assert_error(
        alice.post("/experiments", data="{not json", headers={"Content-Type": "application/json"}),
        400,
    )
    assert "JSON" in error["message"]


def test_update_before_and_after_submission(alice):
    created = create(alice)
    updated = alice.put(
        f"/experiments/{created['id']}",
        json={
            "name": "renamed",
            "parameters": [{"id": "only", "values": {"alpha": "9", "beta": "z"}}],
        },
    )
    assert updated.status_code == 200
    assert updated.json()["name"] == "renamed"
    tasks = alice.get(f"/experiments/{created['id']}/tasks").json()["tasks"]
    assert [t["command"] for t in tasks] == ["echo 9 z"]

    assert alice.post(f"/experiments/{created['id']}/submit").status_code == 200
    error = assert_error(
        alice.put(f"/experiments/{created['id']}", json={"command_template": "true"}), 409
    )
    assert "SUBMITTED" in error["message"]
    assert (
        alice.put(f"/experiments/{created['id']}", json={"description": "still allowed"}).json()[
            "description"
        ]
        == "still allowed"
    )


def test_submit_moves_tasks_to_pending_and_twice_is_a_400(alice):
    created = create(alice)
    submitted = alice.post(f"/experiments/{created['id']}/submit").json()
    assert submitted["status"] == "SUBMITTED"
    tasks = alice.get(f"/experiments/{created['id']}/tasks").json()["tasks"]
    assert {t["status"] for t in tasks} == {"PENDING"}

    error = assert_error(alice.post(f"/experiments/{created['id']}/submit"), 400)
    assert error["details"] == {"current_status": "SUBMITTED", "requested_status": "SUBMITTED"}


def test_cancel_cancels_tasks_and_is_idempotent(alice):
    created = create(alice)
    alice.post(f"/experiments/{created['id']}/submit")

    cancelled = alice.post(f"/experiments/{created['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    tasks = alice.get(f"/experiments/{created['id']}/tasks").json()["tasks"]
    assert {t["status"] for t in tasks} == {"CANCELLED"}
    assert alice.post(f"/experiments/{created['id']}/cancel").json()["status"] == "CANCELLED"
    assert_error(alice.post(f"/experiments/{created['id']}/submit"), 400)


def test_delete_is_204_then_404_and_refused_while_running(alice):
    running = create(alice)
    alice.post(f"/experiments/{running['id']}/submit")
    assert "cancel" in assert_error(alice.delete(f"/experiments/{running['id']}"), 409)["message"]

    created = create(alice)
    response = alice.delete(f"/experiments/{created['id']}")
    assert response.status_code == 204 and response.content == b""
    assert_error(alice.get(f"/experiments/{created['id']}"), 404)
    assert_error(alice.get(f"/experiments/{created['id']}/tasks"), 404)


def test_unknown_paths_and_methods_get_error_responses(alice):
    assert_error(alice.get("/nothing/here"), 404)
    assert_error(alice.request("PATCH", "/experiments"), 405)


def test_an_unexpected_exception_shows_only_the_request_id(alice, monkeypatch, caplog):
    from airavata_hpc import experiments

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(experiments, "list_experiments", explode)
    with caplog.at_level(logging.ERROR):
        response = alice.get("/experiments", headers={"X-Request-ID": "req-12345678"})

    body = assert_error(response, 500)
    assert body["request_id"] == "req-12345678"
    assert "secret" not in response.text
    logged = [r for r in caplog.records if "req-12345678" in r.getMessage()]
    assert logged and logged[0].exc_info and "secret internal detail" in str(logged[0].exc_info[1])


def test_reports_follow_the_spec(alice):
    created = create(alice)
    experiment_id = created["id"]

    summary = alice.get(f"/experiments/{experiment_id}/summary").json()
    assert summary["total_tasks"] == 2 and summary["completed_tasks"] == 0
    progress = alice.get(f"/experiments/{experiment_id}/progress").json()
    assert progress["progress_percentage"] == 0 and progress["current_phase"] == "created"
    timeline = alice.get(f"/experiments/{experiment_id}/timeline").json()
    assert [e["event_type"] for e in timeline["events"]] == ["EXPERIMENT_CREATED"]
    assert alice.get(f"/experiments/{experiment_id}/failed-tasks").json() == []
    groups = alice.get(
        "/tasks/aggregate", params={"experiment_id": experiment_id, "group_by": "parameter_value"}
    ).json()
    assert {g["group_key"]: g["count"] for g in groups["groups"]} == {
        "alpha=0.1": 1,
        "alpha=0.5": 1,
        "beta=x": 1,
        "beta=y": 1,
    }
    task_id = alice.get(f"/experiments/{experiment_id}/tasks").json()["tasks"][0]["id"]
    assert alice.get(f"/tasks/{task_id}").json()["id"] == task_id
    assert alice.get(f"/tasks/{task_id}/progress").json()["status"] == "CREATED"


def test_derive_copies_the_chosen_sets_with_modifications(alice):
    source = create(alice)
    response = alice.post(
        f"/experiments/{source['id']}/derive",
        json={"new_experiment_name": "again", "parameter_modifications": {"beta": "changed"}},
    )

    assert response.status_code == 201
    derived = response.json()
    assert derived["task_count"] == 2 and derived["validation"]["valid"] is True
    new = alice.get(f"/experiments/{derived['new_experiment_id']}").json()
    assert [s["values"]["beta"] for s in new["parameters"]] == ["changed", "changed"]
    assert new["metadata"]["derived_from"] == source["id"]
    error = assert_error(
        alice.post(
            f"/experiments/{source['id']}/derive",
            json={"new_experiment_name": "none", "task_filter": "only_failed"},
        ),
        400,
    )
    assert "selects no task" in error["message"]


def test_nul_characters_are_refused_cleanly_on_both_databases(alice):
    body = experiment_body(description="a\x00b", metadata={"k\x00": "v"})
    error = assert_error(alice.post("/experiments", json=body), 400)
    assert error["details"]["field"] == "description" and "NUL" in error["message"]
    values = experiment_body(parameters=[{"id": "p", "values": {"alpha": "\x00", "beta": "b"}}])
    error = assert_error(alice.post("/experiments", json=values), 400)
    assert error["details"]["field"] == "parameters[0].values.alpha"
    assert_error(alice.get("/experiments/%00"), 404)
    assert_error(alice.get("/tasks/%00/progress"), 404)
    assert alice.get("/experiments").json()["total"] == 0
