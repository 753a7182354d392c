"""Conferences: rooms, participants, DTMF modes and digit collectors; pure logic on an injected clock."""
