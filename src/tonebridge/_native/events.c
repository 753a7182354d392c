/* The RFC 4733 telephone-event receiver: the same presses, counters and timers as media/rfc4733.py's
 * TelephoneEventReceiver for the same packets and `now` values.
 *
 * A press is known by its event code and RTP timestamp (§2.5.2.1), ended presses are remembered oldest first
 * in a small array (a few dozen entries: a linear search beats any index), and the time comparisons are the
 * Python ones on the same doubles. */
#include "events.h"

#include <stddef.h>
#include <string.h>

#include <structmember.h>

/* See media/rfc4733.py for why these values. */
#define LATE_WINDOW_SECONDS 1.0
#define RETRANSMIT_WINDOW_SECONDS 0.3
#define MAX_REMEMBERED 65536

static const char DIGITS[] = "0123456789*#ABCD"; /* §3.2: events 0-15 are the DTMF keys */
static PyObject *digit_strings[16];
static PyObject *started_string, *ended_string;

int tb_events_init(tb_events *e, long clock_rate, double timeout, long remembered)
{
    memset(e, 0, sizeof(*e));
    if (remembered < 0 || remembered > MAX_REMEMBERED) {
        PyErr_Format(PyExc_ValueError, "remembered (%ld) must be 0 to %d", remembered, MAX_REMEMBERED);
        return -1;
    }
    e->clock_rate = clock_rate;
    e->timeout = timeout;
    e->remembered = (int)remembered;
    e->ended = PyMem_RawMalloc(sizeof(tb_ended_press) * (size_t)(remembered + 1));
    if (e->ended == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void tb_events_free(tb_events *e)
{
    PyMem_RawFree(e->ended);
    e->ended = NULL;
}

static int find_ended(const tb_events *e, int event, uint32_t timestamp)
{
    for (int i = 0; i < e->n_ended; i++)
        if (e->ended[i].event == event && e->ended[i].timestamp == timestamp)
            return i;
    return -1;
}

static void forget_ended(tb_events *e, int index)
{
    memmove(e->ended + index, e->ended + index + 1, sizeof(tb_ended_press) * (size_t)(e->n_ended - index - 1));
    e->n_ended--;
}

static tb_press finish(tb_events *e, int timed_out, int has_end_seen, double end_seen)
{
    int index = find_ended(e, e->current.event, e->current.timestamp);
    if (index < 0) {
        index = e->n_ended++;
        e->ended[index].event = e->current.event;
        e->ended[index].timestamp = e->current.timestamp;
    }
    e->ended[index].has_end_seen = has_end_seen;
    e->ended[index].end_seen = end_seen;
    while (e->n_ended > e->remembered)
        forget_ended(e, 0);
    e->has_current = 0;
    tb_press press = {1, e->current.event, e->current.timestamp, e->current.ssrc, e->current.duration, timed_out};
    return press;
}

int tb_events_receive(tb_events *e, uint32_t ssrc, uint32_t timestamp, const uint8_t *payload, Py_ssize_t len,
                      double now, tb_press out[TB_MAX_PRESSES_PER_PACKET])
{
    if (len < 4) {
        e->malformed++;
        return 0;
    }
    /* §2.3: event, E|R|volume, duration; further events packed for redundancy are not read. */
    int event = payload[0], end = (payload[1] & 0x80) != 0;
    long duration = ((long)payload[2] << 8) | payload[3];
    if (event >= 16) {
        e->ignored++;
        return 0;
    }
    int index = find_ended(e, event, timestamp);
    if (index >= 0) {
        tb_ended_press *ended = &e->ended[index];
        if (!ended->has_end_seen || now - ended->end_seen <= RETRANSMIT_WINDOW_SECONDS) {
            /* A retransmitted end packet, or a late update of a finished press. */
            if (end) {
                ended->has_end_seen = 1;
                ended->end_seen = now;
            }
            e->ignored++;
            return 0;
        }
        forget_ended(e, index); /* the sender replays the same packets: a new press */
    }
    int same_source = e->has_last_ssrc && ssrc == e->last_ssrc;
    e->has_last_ssrc = 1;
    e->last_ssrc = ssrc;
    if (same_source && e->has_last_timestamp) {
        double behind = ts_diff32(timestamp, e->last_timestamp);
        if (-(double)e->clock_rate * LATE_WINDOW_SECONDS < behind && behind < 0) {
            /* A packet of an older event after a newer one began: that press is lost or over. */
            e->ignored++;
            return 0;
        }
    }
    int n = 0;
    if (e->has_current && (e->current.event != event || e->current.timestamp != timestamp))
        out[n++] = finish(e, 1, 0, 0.0); /* §2.5.2.1: a new timestamp ends the previous event */
    if (!e->has_current) {
        e->has_current = 1;
        e->current.event = event;
        e->current.timestamp = timestamp;
        e->current.ssrc = ssrc;
        e->current.duration = duration;
        e->current.last_seen = now;
        e->has_last_timestamp = 1;
        e->last_timestamp = timestamp;
        tb_press started = {0, event, timestamp, ssrc, 0, 0};
        out[n++] = started;
    } else {
        if (duration > e->current.duration)
            e->current.duration = duration;
        e->current.last_seen = now;
    }
    if (end)
        out[n++] = finish(e, 0, 1, now);
    return n;
}

int tb_events_next_timer(const tb_events *e, double *when)
{
    if (!e->has_current)
        return 0;
    *when = e->current.last_seen + e->timeout;
    return 1;
}

int tb_events_handle_timer(tb_events *e, double now, tb_press *out)
{
    if (!e->has_current || now < e->current.last_seen + e->timeout)
        return 0;
    *out = finish(e, 1, 0, 0.0);
    return 1;
}

PyObject *tb_press_tuple(const tb_press *press, PyObject *row)
{
    PyObject *kind = press->ended ? ended_string : started_string;
    PyObject *digit = digit_strings[press->event];
    if (row != NULL)
        return Py_BuildValue("(OOOkklO)", row, kind, digit, (unsigned long)press->timestamp,
                             (unsigned long)press->ssrc, press->duration, press->timed_out ? Py_True : Py_False);
    if (press->ended)
        return Py_BuildValue("(OOkklO)", kind, digit, (unsigned long)press->timestamp, (unsigned long)press->ssrc,
                             press->duration, press->timed_out ? Py_True : Py_False);
    return Py_BuildValue("(OOkk)", kind, digit, (unsigned long)press->timestamp, (unsigned long)press->ssrc);
}

/* EventReceiverCore: the core as a Python object. -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    tb_events core;
} EventReceiverCore;

static int EventReceiverCore_init(EventReceiverCore *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"clock_rate", "timeout", "remembered", NULL};
    long clock_rate = 8000, remembered = 32;
    double timeout = 0.5;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|ldl:EventReceiverCore", kwlist, &clock_rate, &timeout,
                                     &remembered))
        return -1;
    tb_events_free(&self->core);
    return tb_events_init(&self->core, clock_rate, timeout, remembered);
}

static void EventReceiverCore_dealloc(EventReceiverCore *self)
{
    tb_events_free(&self->core);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *presses_list(const tb_press *presses, int n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *item = tb_press_tuple(&presses[i], NULL);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static int ready(EventReceiverCore *self)
{
    if (self->core.ended == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "EventReceiverCore was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *EventReceiverCore_receive(EventReceiverCore *self, PyObject *args)
{
    uint32_t ssrc, timestamp;
    PyObject *payload;
    double now;
    Py_buffer view;
    tb_press out[TB_MAX_PRESSES_PER_PACKET];
    if (!ready(self) ||
        !PyArg_ParseTuple(args, "O&O&Od:receive", tb_u32_arg, &ssrc, tb_u32_arg, &timestamp, &payload, &now) ||
        tb_get_bytes(payload, &view, 0, "payload") < 0)
        return NULL;
    int n = tb_events_receive(&self->core, ssrc, timestamp, view.buf, view.len, now, out);
    PyBuffer_Release(&view);
    return presses_list(out, n);
}

static PyObject *EventReceiverCore_next_timer(EventReceiverCore *self, PyObject *unused)
{
    (void)unused;
    double when;
    if (!ready(self))
        return NULL;
    if (!tb_events_next_timer(&self->core, &when))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(when);
}

static PyObject *EventReceiverCore_handle_timer(EventReceiverCore *self, PyObject *arg)
{
    tb_press out;
    double now = PyFloat_AsDouble(arg);
    if (!ready(self) || (now == -1.0 && PyErr_Occurred()))
        return NULL;
    return presses_list(&out, tb_events_handle_timer(&self->core, now, &out));
}

static PyMethodDef EventReceiverCore_methods[] = {
    {"receive", (PyCFunction)EventReceiverCore_receive, METH_VARARGS,
     "receive(ssrc, timestamp, payload, now) -> list of press tuples."},
    {"next_timer", (PyCFunction)EventReceiverCore_next_timer, METH_NOARGS,
     "When handle_timer must be called next (None while no press is in progress)."},
    {"handle_timer", (PyCFunction)EventReceiverCore_handle_timer, METH_O,
     "handle_timer(now) -> list: end a press that has heard nothing for `timeout` seconds."},
    {NULL, NULL, 0, NULL},
};

#define FIELD(name, type) {#name, type, offsetof(EventReceiverCore, core) + offsetof(tb_events, name), READONLY, NULL}
static PyMemberDef EventReceiverCore_members[] = {
    FIELD(malformed, T_ULONGLONG), FIELD(ignored, T_ULONGLONG), FIELD(clock_rate, T_LONG),
    FIELD(timeout, T_DOUBLE),      FIELD(remembered, T_INT),    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EventReceiverCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tonebridge._mediaplane.EventReceiverCore",
    .tp_doc = "EventReceiverCore(clock_rate=8000, timeout=0.5, remembered=32)\n"
              "The telephone-event receiver of media/rfc4733.py; presses come out as tuples\n"
              "('started', digit, timestamp, ssrc) and ('ended', digit, timestamp, ssrc, duration, timed_out).",
    .tp_basicsize = sizeof(EventReceiverCore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)EventReceiverCore_init,
    .tp_dealloc = (destructor)EventReceiverCore_dealloc,
    .tp_methods = EventReceiverCore_methods,
    .tp_members = EventReceiverCore_members,
};

int tb_events_add_type(PyObject *module)
{
    for (int i = 0; i < 16; i++) {
        char digit[2] = {DIGITS[i], '\0'};
        if ((digit_strings[i] = PyUnicode_InternFromString(digit)) == NULL)
            return -1;
    }
    if ((started_string = PyUnicode_InternFromString("started")) == NULL ||
        (ended_string = PyUnicode_InternFromString("ended")) == NULL)
        return -1;
    if (PyType_Ready(&EventReceiverCore_Type) < 0)
        return -1;
    Py_INCREF(&EventReceiverCore_Type);
    return PyModule_AddObject(module, "EventReceiverCore", (PyObject *)&EventReceiverCore_Type);
}
