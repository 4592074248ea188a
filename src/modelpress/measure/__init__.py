"""Measuring artifacts on their runtimes: the benchmark and its worker process, the versioned
results file, statistics, the report and the CI gate. Drives the targets; knows nothing of
recipes or runs (those are :mod:`modelpress.run`, above)."""
