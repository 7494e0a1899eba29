"""`python -m demo`, the Japanese walkthrough's experiment in one command, and `python -m demo.cluster`."""
