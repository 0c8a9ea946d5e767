"""A client's task table: public ids across upstreams, bounded."""

from __future__ import annotations

import pytest

from hub.errors import InvalidParams
from hub.tasks import RELATED_TASK, TaskTable


def test_two_upstreams_with_the_same_task_id_get_public_ids_of_their_own() -> None:
    table = TaskTable()
    assert table.public_id("a", "t1") == "a:t1"
    assert table.public_id("b", "t1") == "b:t1"
    assert table.find("b:t1") == ("b", "t1")
    assert table.upstreams() == ["a", "b"]


def test_an_unknown_public_id_is_invalid_params() -> None:
    with pytest.raises(InvalidParams, match="unknown task: a:nope"):
        TaskTable().find("a:nope")


def test_tasks_results_and_status_notifications_carry_the_public_id() -> None:
    table = TaskTable()
    assert table.publish("a", {"taskId": "t", "status": "working"}) == {"taskId": "a:t", "status": "working"}
    result = table.publish_related("a", {"content": [], "_meta": {RELATED_TASK: {"taskId": "t"}}})
    assert result["_meta"][RELATED_TASK] == {"taskId": "a:t"}
    note = {"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": {"taskId": "t"}}
    assert table.notification("a", note)["params"] == {"taskId": "a:t"}
    assert table.notification("a", {"method": "notifications/message", "params": {}})["params"] == {}


def test_a_question_names_a_known_task_by_its_public_id_and_no_task_it_does_not_know() -> None:
    table = TaskTable()
    table.public_id("a", "t")
    asked = {"message": "?", "_meta": {RELATED_TASK: {"taskId": "t"}, "other": 1}}
    assert table.name_related("a", asked) == {"message": "?", "_meta": {RELATED_TASK: {"taskId": "a:t"}, "other": 1}}
    # Another upstream's id, or one never published: left out, and the table does not grow.
    assert table.name_related("b", asked) == {"message": "?", "_meta": {"other": 1}}
    assert table.name_related("a", {"_meta": {RELATED_TASK: {"taskId": "x"}}}) == {"_meta": {}}
    assert len(table) == 1
    assert table.name_related("a", {"message": "?"}) == {"message": "?"}


def test_the_table_forgets_the_oldest_task_past_its_capacity() -> None:
    table = TaskTable(capacity=3)
    for n in range(5):
        table.public_id("a", str(n))
    assert len(table) == 3
    with pytest.raises(InvalidParams):
        table.find("a:0")
    assert table.find("a:4") == ("a", "4")
    assert table.public_id("a", "0") == "a:0"  # seen again: a fresh entry, the oldest goes
    assert len(table) == 3
