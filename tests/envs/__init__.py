"""Tests: envs."""
