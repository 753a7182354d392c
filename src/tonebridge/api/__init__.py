"""The HTTP surface: the Sinch `calling/v1` routes and Tonebridge's own under /tonebridge/v1 (health, metrics,
events, OpenAPI), their request limits and validation, and Sinch-style errors."""
