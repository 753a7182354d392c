"""Calls: the pure call core (one state machine per SIP dialog), the engine that drives it, the typed call
events, and the applications that decide what calls do (Sinch-style, demo)."""
