"""HTTP handlers, one module per resource: validate, call storage, respond."""
