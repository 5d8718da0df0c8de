"""Kazoo's document rules: ids and database names, documents, messages, filters, paging keys.

Pure functions with no I/O; every other layer may use them, they use no other layer.
"""
