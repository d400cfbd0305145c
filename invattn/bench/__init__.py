"""Benchmarks, one per capability: ``python -m invattn.bench NAME`` (``all`` runs every one).

Each prints a table of ratios measured side by side in one run, which hold on a noisy machine;
absolute times are only meaningful on a quiet one (or a GPU).
"""
