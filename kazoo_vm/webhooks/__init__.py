"""Kazoo's webhooks for the voicemail events kazoo_vm owns: hook types, recording, sending."""
