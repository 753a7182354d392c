"""The HTTP surface: Tonebridge's own routes under /tonebridge/v1 (health, metrics); calling/v1 comes later."""
