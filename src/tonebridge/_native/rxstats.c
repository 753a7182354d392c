/* RTP receive statistics (RFC 3550 A.1, A.3, A.8), the same numbers as media/rtp.py's RtpReceiveStats:
 * a new SSRC restarts them at once (no probation), and packets repeating the previous timestamp are left
 * out of the jitter. Counts are 64-bit where Python's are unbounded: they cannot overflow in practice. */
#include "rxstats.h"

#include <stddef.h>
#include <string.h>

#include <structmember.h>

#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define SEQ_MOD (1LL << 16)

static void reset(tb_rxstats *s)
{
    s->max_seq = s->cycles = s->base_seq = 0;
    s->bad_seq = SEQ_MOD + 1; /* A.1: no candidate for a restart yet */
    s->received = s->expected_prior = s->received_prior = 0;
    s->has_transit = s->has_last_timestamp = 0;
    s->jitter = 0.0;
}

static void init_seq(tb_rxstats *s, long long seq)
{
    s->base_seq = s->max_seq = seq;
    s->bad_seq = SEQ_MOD + 1;
    s->cycles = s->received = s->expected_prior = s->received_prior = 0;
}

void tb_rxstats_init(tb_rxstats *s)
{
    memset(s, 0, sizeof(*s));
    reset(s);
}

static void update_jitter(tb_rxstats *s, uint32_t timestamp, uint32_t arrival_ts)
{
    if (s->has_last_timestamp && timestamp == s->last_timestamp)
        return; /* an RFC 4733 update or end packet says nothing new about transit time */
    s->has_last_timestamp = 1;
    s->last_timestamp = timestamp;
    long long transit = ts_diff32(arrival_ts, timestamp);
    if (s->has_transit) {
        long long d = transit > s->transit ? transit - s->transit : s->transit - transit;
        s->jitter += ((double)d - s->jitter) / 16.0;
    }
    s->has_transit = 1;
    s->transit = transit;
}

int tb_rxstats_update(tb_rxstats *s, uint32_t ssrc, uint16_t sequence, uint32_t timestamp, uint32_t arrival_ts)
{
    long long seq = sequence;
    if (!s->has_ssrc || ssrc != s->ssrc) {
        if (s->has_ssrc)
            s->ssrc_changes++;
        s->has_ssrc = 1;
        s->ssrc = ssrc;
        reset(s);
        init_seq(s, seq);
        s->received = 1;
        update_jitter(s, timestamp, arrival_ts);
        return 1;
    }
    long long udelta = (seq - s->max_seq) & 0xFFFF;
    if (udelta < MAX_DROPOUT) { /* in order, with a permissible gap */
        if (seq < s->max_seq)
            s->cycles += SEQ_MOD;
        s->max_seq = seq;
    } else if (udelta <= SEQ_MOD - MAX_MISORDER) {
        /* A very large jump: accepted only when the next packet follows it (the sender restarted). */
        if (seq == s->bad_seq) {
            init_seq(s, seq);
        } else {
            s->bad_seq = (seq + 1) & 0xFFFF;
            return 0;
        }
    } /* else a duplicate or a reordered packet: counted as received, as in A.1 */
    s->received++;
    update_jitter(s, timestamp, arrival_ts);
    return 1;
}

long long tb_rxstats_extended_max_seq(const tb_rxstats *s) { return s->cycles + s->max_seq; }

long long tb_rxstats_expected(const tb_rxstats *s)
{
    return s->has_ssrc ? tb_rxstats_extended_max_seq(s) - s->base_seq + 1 : 0;
}

long long tb_rxstats_lost(const tb_rxstats *s) { return tb_rxstats_expected(s) - s->received; }

int tb_rxstats_fraction_lost(const tb_rxstats *s)
{
    long long expected_interval = tb_rxstats_expected(s) - s->expected_prior;
    long long lost_interval = expected_interval - (s->received - s->received_prior);
    if (expected_interval <= 0 || lost_interval <= 0)
        return 0;
    long long fraction = (lost_interval << 8) / expected_interval;
    return fraction > 255 ? 255 : (int)fraction;
}

int tb_rxstats_close_interval(tb_rxstats *s)
{
    int fraction = tb_rxstats_fraction_lost(s);
    s->expected_prior = tb_rxstats_expected(s);
    s->received_prior = s->received;
    return fraction;
}

/* ReceiveStatsCore: the core as a Python object. --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    tb_rxstats core;
} ReceiveStatsCore;

static int ReceiveStatsCore_init(ReceiveStatsCore *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":ReceiveStatsCore", kwlist))
        return -1;
    tb_rxstats_init(&self->core);
    return 0;
}

static PyObject *ReceiveStatsCore_update(ReceiveStatsCore *self, PyObject *args)
{
    uint32_t ssrc, sequence, timestamp, arrival;
    if (!PyArg_ParseTuple(args, "O&O&O&O&:update", tb_u32_arg, &ssrc, tb_u32_arg, &sequence, tb_u32_arg, &timestamp,
                          tb_u32_arg, &arrival))
        return NULL;
    return PyBool_FromLong(tb_rxstats_update(&self->core, ssrc, (uint16_t)sequence, timestamp, arrival));
}

static PyObject *ReceiveStatsCore_close_interval(ReceiveStatsCore *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromLong(tb_rxstats_close_interval(&self->core));
}

static PyObject *get_ssrc(ReceiveStatsCore *self, void *c)
{
    (void)c;
    if (!self->core.has_ssrc)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->core.ssrc);
}
static PyObject *get_lost(ReceiveStatsCore *self, void *c) { (void)c; return PyLong_FromLongLong(tb_rxstats_lost(&self->core)); }
static PyObject *get_expected(ReceiveStatsCore *self, void *c) { (void)c; return PyLong_FromLongLong(tb_rxstats_expected(&self->core)); }
static PyObject *get_extended_max_seq(ReceiveStatsCore *self, void *c) { (void)c; return PyLong_FromLongLong(tb_rxstats_extended_max_seq(&self->core)); }
static PyObject *get_fraction_lost(ReceiveStatsCore *self, void *c) { (void)c; return PyLong_FromLong(tb_rxstats_fraction_lost(&self->core)); }

static PyMethodDef ReceiveStatsCore_methods[] = {
    {"update", (PyCFunction)ReceiveStatsCore_update, METH_VARARGS,
     "update(ssrc, sequence, timestamp, arrival_ts) -> bool: False when A.1 judged the packet invalid."},
    {"close_interval", (PyCFunction)ReceiveStatsCore_close_interval, METH_NOARGS,
     "Return fraction_lost and start a new reporting interval."},
    {NULL, NULL, 0, NULL},
};

#define FIELD(name, type) {#name, type, offsetof(ReceiveStatsCore, core) + offsetof(tb_rxstats, name), READONLY, NULL}
static PyMemberDef ReceiveStatsCore_members[] = {
    FIELD(ssrc_changes, T_LONGLONG), FIELD(received, T_LONGLONG), FIELD(jitter, T_DOUBLE),
    FIELD(max_seq, T_LONGLONG),      FIELD(cycles, T_LONGLONG),   FIELD(base_seq, T_LONGLONG),
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef ReceiveStatsCore_getset[] = {
    {"ssrc", (getter)get_ssrc, NULL, "The source's SSRC, None before any packet.", NULL},
    {"lost", (getter)get_lost, NULL, "Cumulative packets lost (A.3); negative when duplicates outnumber losses.", NULL},
    {"expected", (getter)get_expected, NULL, "Packets expected (A.3).", NULL},
    {"extended_max_seq", (getter)get_extended_max_seq, NULL, "Cycles plus the highest sequence number.", NULL},
    {"fraction_lost", (getter)get_fraction_lost, NULL, "Fraction lost in this interval, 8-bit fixed point.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReceiveStatsCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tonebridge._mediaplane.ReceiveStatsCore",
    .tp_doc = "ReceiveStatsCore()\nThe receive statistics of media/rtp.py's RtpReceiveStats, fields as plain ints.",
    .tp_basicsize = sizeof(ReceiveStatsCore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ReceiveStatsCore_init,
    .tp_methods = ReceiveStatsCore_methods,
    .tp_members = ReceiveStatsCore_members,
    .tp_getset = ReceiveStatsCore_getset,
};

int tb_rxstats_add_type(PyObject *module)
{
    if (PyType_Ready(&ReceiveStatsCore_Type) < 0)
        return -1;
    Py_INCREF(&ReceiveStatsCore_Type);
    return PyModule_AddObject(module, "ReceiveStatsCore", (PyObject *)&ReceiveStatsCore_Type);
}
