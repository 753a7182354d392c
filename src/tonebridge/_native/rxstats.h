/* RTP receive statistics of one incoming source (RFC 3550 A.1, A.3, A.8), as media/rtp.py's RtpReceiveStats. */
#ifndef TONEBRIDGE_NATIVE_RXSTATS_H
#define TONEBRIDGE_NATIVE_RXSTATS_H

#include "common.h"

typedef struct {
    int has_ssrc;
    uint32_t ssrc;
    long long ssrc_changes;
    long long max_seq, cycles, base_seq, bad_seq, received, expected_prior, received_prior;
    int has_transit, has_last_timestamp;
    long long transit;
    uint32_t last_timestamp;
    double jitter;
} tb_rxstats;

void tb_rxstats_init(tb_rxstats *s);
int tb_rxstats_update(tb_rxstats *s, uint32_t ssrc, uint16_t sequence, uint32_t timestamp, uint32_t arrival_ts);
long long tb_rxstats_extended_max_seq(const tb_rxstats *s);
long long tb_rxstats_expected(const tb_rxstats *s);
long long tb_rxstats_lost(const tb_rxstats *s);
int tb_rxstats_fraction_lost(const tb_rxstats *s);
int tb_rxstats_close_interval(tb_rxstats *s);

#endif
