"""Development tools shared by the tests, the demo, ``reproduce/`` and the benchmarks.

Not part of any built wheel (``pyproject.toml`` lists the shipped packages; ``rift_dev`` is not
among them, and ``tests/core/test_wheel_contents.py`` checks a built wheel's file list). It is
importable from a checkout: ``make`` installs the checkout as a path entry.
"""
