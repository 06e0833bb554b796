"""Tests: roles."""
