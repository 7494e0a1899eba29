"""The compose demo's helper (wait_for_workers) and `python -m demo`, the experiment in one command."""
