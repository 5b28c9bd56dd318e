"""Experiment helpers for the tools (train in a child process, test in process, Markdown results)."""
