/* The RFC 4733 telephone-event receiver of media/rfc4733.py in C: packets and `now` in, presses out. */
#ifndef TONEBRIDGE_NATIVE_EVENTS_H
#define TONEBRIDGE_NATIVE_EVENTS_H

#include "common.h"

typedef struct {
    int ended; /* 0: PressStarted, 1: PressEnded */
    int event; /* 0-15, the key's index in "0123456789*#ABCD" */
    uint32_t timestamp, ssrc;
    long duration;
    int timed_out;
} tb_press;

typedef struct {
    int event;
    uint32_t timestamp;
    int has_end_seen; /* false for a press ended by the timer or by a newer event */
    double end_seen;
} tb_ended_press;

typedef struct {
    long clock_rate;
    double timeout;
    int remembered;
    unsigned long long malformed, ignored;
    int has_current;
    struct {
        int event;
        uint32_t timestamp, ssrc;
        long duration;
        double last_seen;
    } current;
    tb_ended_press *ended; /* oldest first, up to remembered + 1 while evicting */
    int n_ended;
    int has_last_ssrc, has_last_timestamp;
    uint32_t last_ssrc, last_timestamp;
} tb_events;

#define TB_MAX_PRESSES_PER_PACKET 3 /* the previous press ended, this one started, and ended */

int tb_events_init(tb_events *e, long clock_rate, double timeout, long remembered);
void tb_events_free(tb_events *e);
int tb_events_receive(tb_events *e, uint32_t ssrc, uint32_t timestamp, const uint8_t *payload, Py_ssize_t len,
                      double now, tb_press out[TB_MAX_PRESSES_PER_PACKET]);
/* 0 while no press is in progress, else 1 and the time in *when. */
int tb_events_next_timer(const tb_events *e, double *when);
int tb_events_handle_timer(tb_events *e, double now, tb_press *out);

/* A press as the tuple the Python side reads; `row` NULL for the core's shape, else the plane's. */
PyObject *tb_press_tuple(const tb_press *press, PyObject *row);

#endif
