"""demo.experiment.timeline: the drawing of who did which task when, line for line."""

from __future__ import annotations

from demo.experiment import Task, timeline


def test_two_workers_tasks_drawn_from_received_to_done_with_ticks():
    rows = [
        ("2 s worker", [Task("1", 0.0, 2.0), Task("3", 2.0, 4.0)]),
        ("5 s worker", [Task("2", 0.0, 5.0), Task("4", 5.0)]),  # 4 is not done: drawn to the end
    ]
    assert timeline(rows, end=6.0, scale=0.25) == [
        "2 s worker |[1-----][3-----]",
        "5 s worker |[2-----------------][4-]",
        "  time (s) |0.0       2.5       5.0",
    ]


def test_a_task_shorter_than_its_name_is_drawn_wide_enough_for_it():
    assert timeline([("w", [Task("10", 0.0, 0.1)])], end=1.0, scale=0.5) == [
        "       w |[10]",
        "time (s) |0.0",
    ]


def test_a_task_past_the_right_edge_is_cut_off():
    assert timeline([("w", [Task("123", 1.0)])], end=1.0, scale=0.5) == [
        "       w |  [1",
        "time (s) |0.0",
    ]


def test_a_worker_without_tasks_has_an_empty_row():
    assert timeline([("idle", [])], end=2.0, scale=0.5, tick=4) == [
        "    idle |",
        "time (s) |0.0 2.0",
    ]
