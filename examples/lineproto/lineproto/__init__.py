"""A tiny newline-delimited message protocol on non-blocking sockets, two ways.

:mod:`lineproto.naive` is written the way it usually is at first, and passes
every test on a plain Linux socket; :mod:`lineproto.careful` is the fix.
Both offer the same class, ``LineConnection``. The tests choose one with the
environment variable ``LINEPROTO_IMPL`` (``careful`` unless it says ``naive``).
"""
