"""The sidecar microservice: a thin OpenAI-compatible HTTP layer over `router`."""
