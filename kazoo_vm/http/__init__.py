"""HTTP plumbing shared by the handlers: middleware, envelopes, payloads, validation, listings."""
