"""kazoo_vm: Kazoo's voicemail REST API (crossbar ``vmboxes``) on CouchDB."""

__version__ = "0.1.0"
