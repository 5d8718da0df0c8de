"""Benchmarks of kazoo_vm against raw CouchDB doing the same work (``python -m bench``).

Every figure is a ratio: the service and the CouchDB server under it are measured in the
same run, on the same data, at the same concurrency and with the same HTTP client, so
the machine's speed cancels out. Modules, one concern each (see ``bench/README.rst``):

``settings``   command line, sizes of the default and ``--quick`` runs
``sizing``     sizes chosen in the run from the store's measured speed
``processes``  the store, the service's instances (child processes), their CPU time and memory
``load``       accounts, boxes and messages written straight into CouchDB
``client``     the timed request loops and their statistics
``context``    what every scenario works with (session, both servers, loader)
``scenarios``  the six measured scenarios (service request vs raw CouchDB requests)
``results``    what a scenario produced
``report``     the table, the goals and the JSON file
``runner``     the order of a run, from starting the store to cleaning up
"""
