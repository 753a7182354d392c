/* The fixed-delay jitter buffer of media/jitter.py in C: packets of any length in, frames out. */
#ifndef TONEBRIDGE_NATIVE_JITTER_H
#define TONEBRIDGE_NATIVE_JITTER_H

#include "common.h"

typedef struct {
    long clock_rate;
    int32_t frame_samples, delay_frames, max_frames, capacity;
    int16_t *samples;
    uint8_t *filled;
    int32_t head; /* ring index of the sample at read_ts */
    int has_read_ts; /* false before any packet and after reset: the next packet starts a timeline */
    uint32_t read_ts, high_ts;
    int has_ssrc;
    uint32_t ssrc;
    int32_t late_run, min_depth, pops_in_window;
    unsigned long long pushed, late, duplicates, resyncs, overflow_samples, drift_drops, popped, underruns;
} tb_jitter;

/* Raises ValueError (returns -1) for parameters media/jitter.py rejects or the ring cannot hold. */
int tb_jitter_init(tb_jitter *j, long clock_rate, long frame_samples, long delay_frames, long max_frames);
void tb_jitter_free(tb_jitter *j);
void tb_jitter_push(tb_jitter *j, uint32_t ssrc, uint32_t timestamp, const int16_t *pcm, Py_ssize_t n);
/* Writes frame_samples samples (zeros where nothing arrived); 0 when Python's pop would return None. */
int tb_jitter_pop(tb_jitter *j, int16_t *out);
int32_t tb_jitter_depth(const tb_jitter *j);
void tb_jitter_reset(tb_jitter *j);

#endif
