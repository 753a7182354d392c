/* What every part of the native media plane shares: fixed-width RTP arithmetic and buffer checks. */
#ifndef TONEBRIDGE_NATIVE_COMMON_H
#define TONEBRIDGE_NATIVE_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define FRAME_SAMPLES 160 /* 20 ms at 8 kHz: the plane's tick */

/* a - b of 32-bit RTP timestamps as a signed value, as media/rtp.py's ts_diff. */
static inline int32_t ts_diff32(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

/* Borrow an int16 (or, with itemsize 1, a byte) buffer, checked: C-contiguous, writable when asked, at least
 * `min_items` items. On failure raises TypeError or ValueError and returns -1 with nothing to release. */
int tb_get_int16(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t min_items, const char *what);
int tb_get_bytes(PyObject *obj, Py_buffer *view, Py_ssize_t min_items, const char *what);

/* PyArg "O&" converter: a Python int taken modulo 2^32 into a uint32_t (RTP fields wrap). */
int tb_u32_arg(PyObject *obj, void *out);

/* G.711 (g711.c). */
extern uint8_t tb_ulaw_encode_table[65536];
extern uint8_t tb_alaw_encode_table[65536];
extern int16_t tb_ulaw_decode_table[256];
extern int16_t tb_alaw_decode_table[256];
void tb_g711_init(void);
int tb_g711_add_functions(PyObject *module);

/* The cores' Python types (jitter.c, events.c, rxstats.c) and the plane (plane.c). */
int tb_jitter_add_type(PyObject *module);
int tb_events_add_type(PyObject *module);
int tb_rxstats_add_type(PyObject *module);
int tb_plane_add_type(PyObject *module);

#endif
