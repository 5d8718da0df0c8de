"""Beside a running Kazoo, on its RabbitMQ (``KAZOO_VM_AMQP_URL``).

* :mod:`.publisher` hears kazoo_vm's in-process events (:mod:`kazoo_vm.events`) and
  publishes what Kazoo 4.3 would after the same change: the MWI of the boxes
  (:mod:`.mwi`) and the document events of its data layer (:mod:`.doc_events`), from a
  background task, so a request never waits on the broker;
* :mod:`.listener` hears Kazoo's document events and drops kazoo_vm's cached copies.

Only imported when the variable is set: without it, no AMQP library is loaded.
"""
