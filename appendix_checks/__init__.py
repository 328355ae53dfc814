"""Runnable checks of every numbered equation in the thesis's appendices (one module per appendix).

Run one with ``python -m appendix_checks.appendix_b`` or all with ``kd-ref check``.
"""
