"""SIP in the sans-IO style: messages, transactions, dialogs, SDP and digest auth; only transport.py owns sockets."""
