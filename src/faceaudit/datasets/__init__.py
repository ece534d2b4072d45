"""Labelled face image sets (read-only; images stay where they are)."""
