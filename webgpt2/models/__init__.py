"""Models built from webgpt2's layers."""
