"""The ``cascade-router`` command line: one module per command group, assembled in ``app``.

Exit codes: 0 success; 1 unexpected failure; 2 bad input (data, arguments, configuration);
3 a model backend failed or was unreachable; 4 a router could not be loaded.
"""
