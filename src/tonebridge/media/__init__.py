"""Media: RTP/RTCP packets, G.711, telephone-events, DTMF detection, tones, jitter buffering, WAV players."""
