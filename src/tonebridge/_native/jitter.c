/* The fixed-delay jitter buffer, packet for packet the behaviour of media/jitter.py's JitterBuffer.
 *
 * Offsets are computed in 64 bits from 32-bit timestamp differences, so the wraparound arithmetic is that of
 * ts_diff in media/rtp.py and no sum can overflow. */
#include "jitter.h"

#include <stddef.h>
#include <string.h>

#include <structmember.h>

/* See media/jitter.py for why these values. */
#define LATE_RESYNC 3
#define DRIFT_SLACK 2
#define DRIFT_WINDOW 100
#define MAX_RING_SAMPLES (1L << 24) /* ten minutes of 8 kHz audio per leg: anything larger is a mistake */

int tb_jitter_init(tb_jitter *j, long clock_rate, long frame_samples, long delay_frames, long max_frames)
{
    memset(j, 0, sizeof(*j));
    if (!(0 <= delay_frames && delay_frames < max_frames)) {
        PyErr_Format(PyExc_ValueError, "delay_frames (%ld) must be below max_frames (%ld)", delay_frames,
                     max_frames);
        return -1;
    }
    if (frame_samples < 1 || frame_samples > MAX_RING_SAMPLES || max_frames > MAX_RING_SAMPLES / frame_samples) {
        PyErr_Format(PyExc_ValueError, "frame_samples (%ld) x max_frames (%ld) must be 1 to %ld samples",
                     frame_samples, max_frames, MAX_RING_SAMPLES);
        return -1;
    }
    j->clock_rate = clock_rate;
    j->frame_samples = (int32_t)frame_samples;
    j->delay_frames = (int32_t)delay_frames;
    j->max_frames = (int32_t)max_frames;
    j->capacity = (int32_t)(frame_samples * max_frames);
    j->samples = PyMem_RawCalloc((size_t)j->capacity, sizeof(int16_t));
    j->filled = PyMem_RawCalloc((size_t)j->capacity, 1);
    if (j->samples == NULL || j->filled == NULL) {
        tb_jitter_free(j);
        PyErr_NoMemory();
        return -1;
    }
    j->min_depth = j->max_frames;
    return 0;
}

void tb_jitter_free(tb_jitter *j)
{
    PyMem_RawFree(j->samples);
    PyMem_RawFree(j->filled);
    j->samples = NULL;
    j->filled = NULL;
}

static void resync(tb_jitter *j, uint32_t timestamp)
{
    memset(j->filled, 0, (size_t)j->capacity);
    j->head = 0;
    /* The first frame of the new timeline plays after delay_frames pops: the buffer's delay. */
    j->read_ts = timestamp - (uint32_t)(j->delay_frames * j->frame_samples);
    j->has_read_ts = 1;
    j->high_ts = j->read_ts;
    j->late_run = 0;
    j->min_depth = j->max_frames;
    j->pops_in_window = 0;
    j->resyncs++;
}

/* Discard `samples` at the read position (all of the ring when it is more). */
static void skip(tb_jitter *j, int64_t samples)
{
    int32_t cap = j->capacity;
    if (samples >= cap) {
        memset(j->filled, 0, (size_t)cap);
    } else {
        int32_t first = cap - j->head < samples ? cap - j->head : (int32_t)samples;
        memset(j->filled + j->head, 0, (size_t)first);
        memset(j->filled, 0, (size_t)(samples - first));
    }
    j->head = (int32_t)((j->head + samples % cap) % cap);
    j->read_ts += (uint32_t)samples;
}

void tb_jitter_push(tb_jitter *j, uint32_t ssrc, uint32_t timestamp, const int16_t *pcm, Py_ssize_t n)
{
    int32_t cap = j->capacity;
    if (n <= 0)
        return;
    j->pushed++;
    if (n > cap) { /* longer than the whole ring: only its end can be played */
        timestamp += (uint32_t)(n - cap);
        pcm += n - cap;
        n = cap;
    }
    if (!j->has_read_ts || !j->has_ssrc || ssrc != j->ssrc) {
        j->ssrc = ssrc;
        j->has_ssrc = 1;
        resync(j, timestamp);
    }
    int64_t offset = ts_diff32(timestamp, j->read_ts);
    int jumped_ahead = offset >= cap && ts_diff32(timestamp, j->high_ts) >= cap / 2;
    if (jumped_ahead || offset < -(int64_t)cap) {
        /* A timestamp jump: follow the new timeline (an overflow merely continues buffered audio). */
        resync(j, timestamp);
        offset = ts_diff32(timestamp, j->read_ts);
    }
    if (offset + n <= 0) {
        j->late++;
        j->late_run++;
        if (j->late_run < LATE_RESYNC)
            return;
        resync(j, timestamp);
        offset = ts_diff32(timestamp, j->read_ts);
    }
    j->late_run = 0;
    if (offset < 0) { /* the start of the packet is late, its end is not */
        pcm += -offset;
        n += offset;
        offset = 0;
    }
    int64_t overflow = offset + n - cap;
    if (overflow > 0) {
        /* More ahead than the ring holds: give up the oldest frames (bounded memory, bounded delay). */
        int64_t drop = (overflow + j->frame_samples - 1) / j->frame_samples * j->frame_samples;
        skip(j, drop);
        j->overflow_samples += (unsigned long long)drop;
        offset -= drop;
        if (offset < 0) {
            pcm += -offset;
            n += offset;
            offset = 0;
        }
    }
    /* Here 0 <= offset and offset + n <= cap: one or two runs of the ring. */
    int32_t start = (int32_t)((j->head + offset) % cap);
    int32_t first = cap - start < n ? cap - start : (int32_t)n;
    int all_filled = 1;
    for (int32_t i = 0; i < first && all_filled; i++)
        all_filled = j->filled[start + i];
    for (int32_t i = 0; i < n - first && all_filled; i++)
        all_filled = j->filled[i];
    if (all_filled) {
        j->duplicates++;
        return;
    }
    memcpy(j->samples + start, pcm, (size_t)first * sizeof(int16_t));
    memset(j->filled + start, 1, (size_t)first);
    memcpy(j->samples, pcm + first, (size_t)(n - first) * sizeof(int16_t));
    memset(j->filled, 1, (size_t)(n - first));
    uint32_t end = j->read_ts + (uint32_t)(offset + n);
    if (ts_diff32(end, j->high_ts) > 0)
        j->high_ts = end;
}

int32_t tb_jitter_depth(const tb_jitter *j)
{
    if (!j->has_read_ts)
        return 0;
    int32_t depth = ts_diff32(j->high_ts, j->read_ts);
    return depth > 0 ? depth : 0;
}

static void control_drift(tb_jitter *j)
{
    int32_t frames = tb_jitter_depth(j) / j->frame_samples;
    if (frames < j->min_depth)
        j->min_depth = frames;
    if (++j->pops_in_window < DRIFT_WINDOW)
        return;
    if (j->min_depth >= j->delay_frames + DRIFT_SLACK) { /* the sender's clock runs fast: hold the delay */
        skip(j, j->frame_samples);
        j->drift_drops++;
    }
    j->min_depth = j->max_frames;
    j->pops_in_window = 0;
}

int tb_jitter_pop(tb_jitter *j, int16_t *out)
{
    int32_t n = j->frame_samples, cap = j->capacity;
    if (!j->has_read_ts) {
        memset(out, 0, (size_t)n * sizeof(int16_t));
        return 0;
    }
    control_drift(j);
    int any = 0;
    int32_t index = j->head;
    for (int32_t i = 0; i < n; i++) {
        if (j->filled[index]) {
            out[i] = j->samples[index];
            any = 1;
        } else {
            out[i] = 0;
        }
        if (++index == cap)
            index = 0;
    }
    if (any)
        j->popped++;
    else
        j->underruns++;
    skip(j, n);
    return any;
}

void tb_jitter_reset(tb_jitter *j)
{
    memset(j->filled, 0, (size_t)j->capacity);
    j->has_read_ts = 0;
    j->has_ssrc = 0;
}

/* JitterCore: the core as a Python object (for media/native.py and the tests). --------------------------- */

typedef struct {
    PyObject_HEAD
    tb_jitter core;
} JitterCore;

static int JitterCore_init(JitterCore *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"clock_rate", "frame_samples", "delay_frames", "max_frames", NULL};
    long clock_rate = 8000, frame_samples = FRAME_SAMPLES, delay_frames = 2, max_frames = 50;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|llll:JitterCore", kwlist, &clock_rate, &frame_samples,
                                     &delay_frames, &max_frames))
        return -1;
    tb_jitter_free(&self->core);
    return tb_jitter_init(&self->core, clock_rate, frame_samples, delay_frames, max_frames);
}

static void JitterCore_dealloc(JitterCore *self)
{
    tb_jitter_free(&self->core);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(JitterCore *self)
{
    if (self->core.samples == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "JitterCore was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *JitterCore_push(JitterCore *self, PyObject *args)
{
    uint32_t ssrc, timestamp;
    PyObject *samples;
    Py_buffer view;
    if (!ready(self) ||
        !PyArg_ParseTuple(args, "O&O&O:push", tb_u32_arg, &ssrc, tb_u32_arg, &timestamp, &samples) ||
        tb_get_int16(samples, &view, 0, 0, "samples") < 0)
        return NULL;
    tb_jitter_push(&self->core, ssrc, timestamp, view.buf, view.len / 2);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *JitterCore_pop_into(JitterCore *self, PyObject *out)
{
    Py_buffer view;
    if (!ready(self))
        return NULL;
    if (tb_get_int16(out, &view, 1, self->core.frame_samples, "out") < 0)
        return NULL;
    int got = tb_jitter_pop(&self->core, view.buf);
    PyBuffer_Release(&view);
    return PyBool_FromLong(got);
}

static PyObject *JitterCore_reset(JitterCore *self, PyObject *unused)
{
    (void)unused;
    if (!ready(self))
        return NULL;
    tb_jitter_reset(&self->core);
    Py_RETURN_NONE;
}

static PyObject *JitterCore_depth(JitterCore *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(tb_jitter_depth(&self->core));
}

static PyMethodDef JitterCore_methods[] = {
    {"push", (PyCFunction)JitterCore_push, METH_VARARGS,
     "push(ssrc, timestamp, samples): store a packet's decoded int16 samples at its timestamp."},
    {"pop_into", (PyCFunction)JitterCore_pop_into, METH_O,
     "pop_into(out) -> bool: write the next frame into out; False (and zeros) when nothing arrived for it."},
    {"reset", (PyCFunction)JitterCore_reset, METH_NOARGS, "Forget everything buffered."},
    {NULL, NULL, 0, NULL},
};

#define COUNTER(name) {#name, T_ULONGLONG, offsetof(JitterCore, core) + offsetof(tb_jitter, name), READONLY, NULL}
#define SETTING(name) {#name, T_INT, offsetof(JitterCore, core) + offsetof(tb_jitter, name), READONLY, NULL}
static PyMemberDef JitterCore_members[] = {
    COUNTER(pushed), COUNTER(late), COUNTER(duplicates), COUNTER(resyncs), COUNTER(overflow_samples),
    COUNTER(drift_drops), COUNTER(popped), COUNTER(underruns),
    SETTING(frame_samples), SETTING(delay_frames), SETTING(max_frames), SETTING(capacity),
    {"clock_rate", T_LONG, offsetof(JitterCore, core) + offsetof(tb_jitter, clock_rate), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef JitterCore_getset[] = {
    {"depth", (getter)JitterCore_depth, NULL, "Samples from the read position to the end of the newest packet.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject JitterCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tonebridge._mediaplane.JitterCore",
    .tp_doc = "JitterCore(clock_rate=8000, frame_samples=160, delay_frames=2, max_frames=50)\n"
              "The jitter buffer of media/jitter.py, timestamps and SSRCs as plain ints.",
    .tp_basicsize = sizeof(JitterCore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)JitterCore_init,
    .tp_dealloc = (destructor)JitterCore_dealloc,
    .tp_methods = JitterCore_methods,
    .tp_members = JitterCore_members,
    .tp_getset = JitterCore_getset,
};

int tb_jitter_add_type(PyObject *module)
{
    if (PyType_Ready(&JitterCore_Type) < 0)
        return -1;
    Py_INCREF(&JitterCore_Type);
    return PyModule_AddObject(module, "JitterCore", (PyObject *)&JitterCore_Type);
}
