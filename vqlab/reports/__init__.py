"""Reporting: markdown tables and provenance, plots, and ``results.csv``.

Every report vqlab writes (an experiment's, a sweep's, ``vqlab evaluate``'s and
``vqlab diagnose``'s) is built from these three modules. They read data files and metrics and
never train or evaluate anything themselves.
"""
