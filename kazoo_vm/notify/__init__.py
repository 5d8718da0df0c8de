"""Voicemail-to-email: build the email, relay it over SMTP, and the delivery worker."""
