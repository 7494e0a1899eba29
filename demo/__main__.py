"""python -m demo: the Japanese walkthrough's experiment in one command (the code is in demo/experiment.py)."""

import os
import signal

# Ctrl+C while Python is still loading: nothing is started yet, so leave as quietly as a Ctrl+C later does.
signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))

from demo.experiment import main  # noqa: E402 - after the handler: loading pika takes a moment
from workqueue import cli  # noqa: E402

cli.run(main)
