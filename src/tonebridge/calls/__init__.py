"""Calls: one Call per SIP dialog and RTP stream, with its states, end reasons and operations."""
