"""The ``pixelfox`` command line: ``up``, ``put``, ``status``, ``users``, ``keys``."""
