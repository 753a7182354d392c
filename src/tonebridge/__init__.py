"""Tonebridge: a self-hosted voice conferencing server (SIP/RTP to phones, Sinch Voice API to apps)."""

__version__ = "0.1.0"
