"""python -m demo [LESSON]: the Japanese walkthrough's lessons, each in one command.

    python -m demo [fair]       the walkthrough's experiment, prefetch 1: 7 tasks and 3 (demo/experiment.py)
    python -m demo round-robin  the same with prefetch 0: 5 and 5
    python -m demo ack          a worker stopped mid-task: the task goes to the other worker (demo/lessons.py)
    python -m demo durable      a broker restart: what a durable queue and persistent messages keep
    python -m demo confirms     a broker crash: messages sent without and with publisher confirms
    python -m demo redeclare    a queue declared again with other settings: an error
"""

import os
import signal
import sys

# Ctrl+C while Python is still loading: nothing is started yet, so leave as quietly as a Ctrl+C later does.
signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))

LESSONS = ("fair", "round-robin", "ack", "durable", "confirms", "redeclare")

lesson = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "fair"
if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
    del sys.argv[1]
if lesson not in LESSONS:
    print(f"error: no lesson {lesson!r}; the lessons are {', '.join(LESSONS)} (see python -m demo --help)",
          file=sys.stderr)
    sys.exit(2)
if lesson == "round-robin":
    if any(a == "--prefetch" or a.startswith("--prefetch=") for a in sys.argv[1:]):
        print("error: round-robin is prefetch 0; for another prefetch, python -m demo --prefetch N",
              file=sys.stderr)
        sys.exit(2)
    sys.argv[1:1] = ["--prefetch", "0"]

from workqueue import cli  # noqa: E402 - after the handler: loading pika takes a moment

if lesson in ("fair", "round-robin"):
    from demo.experiment import main as experiment  # noqa: E402

    cli.run(experiment)
else:
    from demo.lessons import lesson_main  # noqa: E402

    cli.run(lambda: lesson_main(lesson))
