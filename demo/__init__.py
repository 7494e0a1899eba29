"""`python -m demo`: the Japanese walkthrough's experiment and lessons, one command each; `python -m demo.cluster`."""
