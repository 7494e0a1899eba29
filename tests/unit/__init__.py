"""Unit tests: no broker, no network, a few seconds in all."""
