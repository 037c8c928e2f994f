"""Benchmarks of Ringfence: ``make bench`` (``python -m bench``) runs every module here.

A benchmark is a module of this package with a ``run()`` function that returns a list of
rows (dicts). Known keys, all optional but ``benchmark``:

- ``benchmark``: what was measured (rows with the same name form a series);
- ``size``: the size it was measured at (e.g. open positions);
- ``value`` and ``unit``: the measurement (e.g. ``12.3``, ``"ms"``);
- ``goal``: the target as text (e.g. ``"< 50 ms"``) and ``ok``: whether it was met;
- ``note``: anything else worth a word;
- ``errors``: failed requests or operations; any non-zero count fails the run.

A module may also be run alone (``python -m bench.api``).

``python -m bench`` prints one table; the ratio column compares each row's value with the
first row of its series (so a flat series reads about 1.0x). The benchmarks run against a
database of their own (``ringfence_bench`` on the server of ``DATABASE_URL``), created
fresh and dropped at the end; ``python -m bench engine`` runs only the named modules.
"""
