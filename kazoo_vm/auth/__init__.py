"""Who may do what: Kazoo tokens, API keys, credentials, and the throttle on failed logins."""
