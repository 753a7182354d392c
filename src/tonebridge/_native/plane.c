/* The Plane: every leg's RTP in and out, once per 20 ms tick, with no Python code per packet or per leg.
 *
 * Each leg is a row: one non-blocking UDP socket that Python owns (the plane only reads and writes its fd),
 * and the row's receive state: latching, receive statistics, a jitter buffer and an RFC 4733 receiver. One
 * `receive` drains every ready socket (epoll, level-triggered, then recvmmsg in batches), and fills row r of
 * a rows x 160 int16 matrix with the leg's next frame; one `send` encodes and sends row r of another. All of
 * it runs holding the GIL (the media thread shares one core with the rest of the process and the sockets
 * never block) except `sleep_until`, the tick's wait. */
#include "events.h"
#include "jitter.h"
#include "rxstats.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32          /* datagrams per recvmmsg */
#define DATAGRAM_MAX 2048 /* larger than any RTP packet over Ethernet; longer ones arrive truncated: dropped */
/* A flooding peer cannot hold the tick: at most this many batches per leg per tick (10 s of 20 ms packets);
 * what remains is read on the next tick (level-triggered). */
#define MAX_BATCHES_PER_LEG 16
#define MAX_CAPACITY (1 << 20)
#define PT_PCMU 0
#define PT_PCMA 8

typedef struct {
    int fd;
    int configured, sending, latched, has_remote;
    struct sockaddr_in remote;
    int send_pt, event_pt;
    /* The outgoing stream (RFC 3550 §5.1), as media/rtp.py's RtpStream. */
    uint32_t ssrc, timestamp;
    uint16_t sequence;
    int has_last_timestamp;
    uint32_t last_timestamp;
    unsigned long long packets_received, packets_sent, octets_sent, packets_dropped, send_errors;
    /* Liveness (`silent_rows`): when the peer's last valid RTP arrived, and when the leg was last configured,
     * on the clock of `receive`'s `now` (time.monotonic()). A re-INVITE restarts the wait for the first
     * packet, so that a peer resuming after a long hold is not judged on the packets before it. */
    int has_last_received;
    double last_received, configured_at;
    tb_rxstats stats;
    tb_jitter jitter;
    tb_events events;
} Leg;

typedef struct {
    unsigned long long packets_in, packets_out, packets_dropped, send_errors, recv_errors, bytes_in, bytes_out;
} Totals;

typedef struct {
    PyObject_HEAD
    int epfd;
    Py_ssize_t capacity, rows;
    Leg **legs;
    struct epoll_event *ready;
    long delay_frames, max_frames;
    double event_timeout;
    Totals totals;
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    struct sockaddr_in sources[BATCH];
    uint8_t buffers[BATCH][DATAGRAM_MAX];
} Plane;

/* Rows ------------------------------------------------------------------------------------------------------ */

static void free_leg(Leg *leg)
{
    tb_jitter_free(&leg->jitter);
    tb_events_free(&leg->events);
    PyMem_RawFree(leg);
}

static int check_open(Plane *self)
{
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the plane is closed");
        return 0;
    }
    return 1;
}

static Leg *leg_at(Plane *self, Py_ssize_t row)
{
    if (!check_open(self))
        return NULL;
    if (row < 0 || row >= self->capacity || self->legs[row] == NULL) {
        PyObject *key = PyLong_FromSsize_t(row);
        if (key != NULL) {
            PyErr_SetObject(PyExc_KeyError, key);
            Py_DECREF(key);
        }
        return NULL;
    }
    return self->legs[row];
}

/* The leg of a row given as a Python int (METH_O methods). */
static Leg *leg_of(Plane *self, PyObject *arg)
{
    Py_ssize_t row = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    return row == -1 && PyErr_Occurred() ? NULL : leg_at(self, row);
}

static void recount_rows(Plane *self)
{
    while (self->rows > 0 && self->legs[self->rows - 1] == NULL)
        self->rows--;
}

static void remove_row(Plane *self, Py_ssize_t row)
{
    Leg *leg = self->legs[row];
    int shared = 0; /* Python closed this fd and its number now belongs to another row's socket */
    for (Py_ssize_t r = 0; r < self->rows && !shared; r++)
        shared = r != row && self->legs[r] != NULL && self->legs[r]->fd == leg->fd;
    if (!shared)
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, leg->fd, NULL); /* EBADF/ENOENT: Python closed it first */
    self->legs[row] = NULL;
    free_leg(leg);
    recount_rows(self);
}

static int Plane_init(Plane *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"capacity", "delay_frames", "max_frames", "event_timeout", NULL};
    Py_ssize_t capacity;
    long delay_frames = 2, max_frames = 50;
    double event_timeout = 0.5;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n|$lld:Plane", kwlist, &capacity, &delay_frames, &max_frames,
                                     &event_timeout))
        return -1;
    if (self->legs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Plane is already initialised");
        return -1;
    }
    if (capacity < 1 || capacity > MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity (%zd) must be 1 to %d", capacity, MAX_CAPACITY);
        return -1;
    }
    tb_jitter probe; /* the jitter parameters, checked once here rather than on every add */
    if (tb_jitter_init(&probe, 8000, FRAME_SAMPLES, delay_frames, max_frames) < 0)
        return -1;
    tb_jitter_free(&probe);
    self->legs = PyMem_Calloc((size_t)capacity, sizeof(Leg *));
    self->ready = PyMem_Calloc((size_t)capacity, sizeof(struct epoll_event));
    if (self->legs == NULL || self->ready == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->capacity = capacity;
    self->delay_frames = delay_frames;
    self->max_frames = max_frames;
    self->event_timeout = event_timeout;
    for (int i = 0; i < BATCH; i++) {
        self->iovs[i].iov_base = self->buffers[i];
        self->iovs[i].iov_len = DATAGRAM_MAX;
        self->msgs[i].msg_hdr.msg_name = &self->sources[i];
        self->msgs[i].msg_hdr.msg_iov = &self->iovs[i];
        self->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static PyObject *Plane_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    Plane *self = (Plane *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static void close_plane(Plane *self)
{
    if (self->legs != NULL) {
        for (Py_ssize_t r = 0; r < self->capacity; r++)
            if (self->legs[r] != NULL)
                free_leg(self->legs[r]);
        PyMem_Free(self->legs);
        self->legs = NULL;
    }
    PyMem_Free(self->ready);
    self->ready = NULL;
    if (self->epfd >= 0)
        close(self->epfd);
    self->epfd = -1;
    self->rows = 0;
}

static void Plane_dealloc(Plane *self)
{
    close_plane(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Plane_close(Plane *self, PyObject *unused)
{
    (void)unused;
    close_plane(self);
    Py_RETURN_NONE;
}

static PyObject *Plane_add(Plane *self, PyObject *arg)
{
    if (!check_open(self))
        return NULL;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "fd (%ld) is not a file descriptor", fd);
        return NULL;
    }
    Py_ssize_t row = 0;
    while (row < self->capacity && self->legs[row] != NULL)
        row++;
    if (row == self->capacity) {
        PyErr_Format(PyExc_RuntimeError, "the plane is full: all %zd rows are in use", self->capacity);
        return NULL;
    }
    Leg *leg = PyMem_RawCalloc(1, sizeof(Leg));
    if (leg == NULL)
        return PyErr_NoMemory();
    if (tb_jitter_init(&leg->jitter, 8000, FRAME_SAMPLES, self->delay_frames, self->max_frames) < 0 ||
        tb_events_init(&leg->events, 8000, self->event_timeout, 32) < 0) {
        free_leg(leg);
        return NULL;
    }
    tb_rxstats_init(&leg->stats);
    leg->fd = (int)fd;
    leg->event_pt = -1;
    /* Random until Python's set_stream, as RFC 3550 §5.1 asks (a failure leaves zeros: still valid RTP). */
    uint8_t seed[10] = {0};
    (void)getrandom(seed, sizeof(seed), GRND_NONBLOCK);
    memcpy(&leg->ssrc, seed, 4);
    memcpy(&leg->timestamp, seed + 4, 4);
    memcpy(&leg->sequence, seed + 8, 2);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)row};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, (int)fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        free_leg(leg);
        return NULL;
    }
    self->legs[row] = leg;
    if (row >= self->rows)
        self->rows = row + 1;
    return PyLong_FromSsize_t(row);
}

static PyObject *Plane_remove(Plane *self, PyObject *arg)
{
    Py_ssize_t row = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (row == -1 && PyErr_Occurred())
        return NULL;
    if (self->legs != NULL && row >= 0 && row < self->capacity && self->legs[row] != NULL)
        remove_row(self, row);
    Py_RETURN_NONE;
}

/* Configuration and the outgoing stream --------------------------------------------------------------------- */

static int check_time(double t, const char *what)
{
    if (isfinite(t) && fabs(t) < 1e12)
        return 1;
    PyErr_Format(PyExc_ValueError, "%s must be a finite time in seconds", what);
    return 0;
}

static double monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* the clock of Python's time.monotonic() on Linux */
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

static PyObject *Plane_configure(Plane *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"row", "host", "port", "relatch", "send_pt", "event_pt", "sending", "now", NULL};
    Py_ssize_t row;
    const char *host;
    int port, relatch, send_pt, event_pt, sending;
    PyObject *now_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nsipiip|$O:configure", kwlist, &row, &host, &port, &relatch,
                                     &send_pt, &event_pt, &sending, &now_obj))
        return NULL;
    double now = now_obj == Py_None ? monotonic_now() : PyFloat_AsDouble(now_obj);
    if ((now == -1.0 && PyErr_Occurred()) || !check_time(now, "now"))
        return NULL;
    Leg *leg = leg_at(self, row);
    if (leg == NULL)
        return NULL;
    struct in_addr addr;
    if (inet_pton(AF_INET, host, &addr) != 1) {
        PyErr_Format(PyExc_ValueError, "host '%s' is not an IPv4 address (the plane speaks IPv4 only)", host);
        return NULL;
    }
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port (%d) must be 0 to 65535", port);
        return NULL;
    }
    if (send_pt != PT_PCMU && send_pt != PT_PCMA) {
        PyErr_Format(PyExc_ValueError, "send_pt (%d) must be 0 (PCMU) or 8 (PCMA)", send_pt);
        return NULL;
    }
    if (event_pt < -1 || event_pt > 127) {
        PyErr_Format(PyExc_ValueError, "event_pt (%d) must be a payload type 0-127, or -1 for none", event_pt);
        return NULL;
    }
    if (relatch || !leg->configured) {
        memset(&leg->remote, 0, sizeof(leg->remote));
        leg->remote.sin_family = AF_INET;
        leg->remote.sin_addr = addr;
        leg->remote.sin_port = htons((uint16_t)port);
        leg->has_remote = 1;
        leg->latched = 0;
    }
    leg->send_pt = send_pt;
    leg->event_pt = event_pt;
    leg->sending = sending;
    leg->configured = 1;
    leg->configured_at = now;
    Py_RETURN_NONE;
}

static PyObject *Plane_set_stream(Plane *self, PyObject *args)
{
    Py_ssize_t row;
    unsigned long long ssrc, sequence, timestamp;
    if (!PyArg_ParseTuple(args, "nKKK:set_stream", &row, &ssrc, &sequence, &timestamp))
        return NULL;
    Leg *leg = leg_at(self, row);
    if (leg == NULL)
        return NULL;
    if (ssrc > 0xFFFFFFFFULL || sequence > 0xFFFFULL || timestamp > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "ssrc and timestamp must fit 32 bits and sequence 16 bits");
        return NULL;
    }
    leg->ssrc = (uint32_t)ssrc;
    leg->sequence = (uint16_t)sequence;
    leg->timestamp = (uint32_t)timestamp;
    Py_RETURN_NONE;
}

static PyObject *Plane_next_sequence(Plane *self, PyObject *args)
{
    Py_ssize_t row, payload_len;
    uint32_t timestamp;
    if (!PyArg_ParseTuple(args, "nnO&:next_sequence", &row, &payload_len, tb_u32_arg, &timestamp))
        return NULL;
    Leg *leg = leg_at(self, row);
    if (leg == NULL)
        return NULL;
    if (payload_len < 0) {
        PyErr_Format(PyExc_ValueError, "payload_len (%zd) must not be negative", payload_len);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(kk)", (unsigned long)leg->sequence, (unsigned long)leg->ssrc);
    if (result == NULL)
        return NULL;
    leg->sequence++;
    leg->packets_sent++;
    leg->octets_sent += (unsigned long long)payload_len; /* RFC 3550 §6.4.1: payload octets only */
    leg->has_last_timestamp = 1;
    leg->last_timestamp = timestamp;
    return result;
}

static PyObject *Plane_timestamp(Plane *self, PyObject *arg)
{
    Leg *leg = leg_of(self, arg);
    return leg == NULL ? NULL : PyLong_FromUnsignedLong(leg->timestamp);
}

static PyObject *Plane_advance(Plane *self, PyObject *args)
{
    Py_ssize_t row;
    uint32_t samples;
    if (!PyArg_ParseTuple(args, "nO&:advance", &row, tb_u32_arg, &samples))
        return NULL;
    Leg *leg = leg_at(self, row);
    if (leg == NULL)
        return NULL;
    leg->timestamp += samples; /* modulo 2^32, as RtpStream.advance */
    Py_RETURN_NONE;
}

static int send_to_remote(Plane *self, Leg *leg, const void *data, size_t len)
{
    ssize_t sent;
    do
        sent = sendto(leg->fd, data, len, MSG_DONTWAIT, (const struct sockaddr *)&leg->remote, sizeof(leg->remote));
    while (sent < 0 && errno == EINTR);
    if (sent < 0) { /* EAGAIN, ENOBUFS, ECONNREFUSED...: the packet is lost, as on the network */
        leg->send_errors++;
        self->totals.send_errors++;
        return 0;
    }
    self->totals.packets_out++;
    self->totals.bytes_out += (unsigned long long)sent;
    return 1;
}

static PyObject *Plane_send_raw(Plane *self, PyObject *args)
{
    Py_ssize_t row;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "ny*:send_raw", &row, &data))
        return NULL;
    Leg *leg = leg_at(self, row);
    if (leg == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    int ok = leg->has_remote && send_to_remote(self, leg, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyBool_FromLong(ok);
}

/* Receiving ------------------------------------------------------------------------------------------------- */

typedef struct {
    int payload_type;
    uint16_t sequence;
    uint32_t timestamp, ssrc;
    const uint8_t *payload;
    Py_ssize_t payload_len;
} RtpView;

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* RFC 3550 §5.1 with the rules of media/rtp.py's RtpPacket.parse: 0 when valid. */
static int parse_rtp(const uint8_t *data, Py_ssize_t len, RtpView *packet)
{
    if (len < 12 || data[0] >> 6 != 2)
        return -1;
    Py_ssize_t offset = 12 + 4 * (data[0] & 0x0F); /* the CSRC list */
    if (len < offset)
        return -1;
    if (data[0] & 0x10) { /* §5.3.1: a header extension, skipped */
        if (len < offset + 4)
            return -1;
        Py_ssize_t words = (Py_ssize_t)data[offset + 2] << 8 | data[offset + 3];
        offset += 4;
        if (len < offset + 4 * words)
            return -1;
        offset += 4 * words;
    }
    Py_ssize_t end = len;
    if (data[0] & 0x20) { /* the last octet counts the padding, itself included */
        Py_ssize_t padding = data[len - 1];
        if (padding == 0 || end - padding < offset)
            return -1;
        end -= padding;
    }
    packet->payload_type = data[1] & 0x7F;
    packet->sequence = (uint16_t)(data[2] << 8 | data[3]);
    packet->timestamp = be32(data + 4);
    packet->ssrc = be32(data + 8);
    packet->payload = data + offset;
    packet->payload_len = end - offset;
    return 0;
}

static void drop(Plane *self, Leg *leg)
{
    leg->packets_dropped++;
    self->totals.packets_dropped++;
}

/* Appends the presses to `events` unless an earlier append failed (*failed): the state moves on regardless. */
static void report(PyObject *events, Py_ssize_t row, const tb_press *presses, int n, int *failed)
{
    for (int i = 0; i < n && !*failed; i++) {
        PyObject *row_obj = PyLong_FromSsize_t(row);
        PyObject *item = row_obj == NULL ? NULL : tb_press_tuple(&presses[i], row_obj);
        Py_XDECREF(row_obj);
        if (item == NULL || PyList_Append(events, item) < 0)
            *failed = 1;
        Py_XDECREF(item);
    }
}

static void datagram(Plane *self, Py_ssize_t row, Leg *leg, const struct mmsghdr *msg, double now,
                     uint32_t arrival_ts, PyObject *events, int *failed)
{
    const uint8_t *data = msg->msg_hdr.msg_iov->iov_base;
    Py_ssize_t len = msg->msg_len;
    const struct sockaddr_in *source = msg->msg_hdr.msg_name;
    RtpView packet;
    self->totals.packets_in++;
    self->totals.bytes_in += (unsigned long long)len;
    if ((msg->msg_hdr.msg_flags & MSG_TRUNC) || len > DATAGRAM_MAX || parse_rtp(data, len, &packet) < 0 ||
        !leg->configured || msg->msg_hdr.msg_namelen < sizeof(struct sockaddr_in) ||
        source->sin_family != AF_INET) {
        drop(self, leg);
        return;
    }
    if (!leg->latched || leg->remote.sin_addr.s_addr != source->sin_addr.s_addr ||
        leg->remote.sin_port != source->sin_port) {
        /* Symmetric RTP (RFC 4961): send to where the peer really is, once its packets arrive. */
        memset(&leg->remote, 0, sizeof(leg->remote));
        leg->remote.sin_family = AF_INET;
        leg->remote.sin_addr = source->sin_addr;
        leg->remote.sin_port = source->sin_port;
        leg->has_remote = 1;
        leg->latched = 1;
    }
    leg->packets_received++;
    /* Any valid RTP shows the peer alive, comfort noise and events included, used or not. */
    leg->has_last_received = 1;
    leg->last_received = now;
    tb_rxstats_update(&leg->stats, packet.ssrc, packet.sequence, packet.timestamp, arrival_ts);
    if (leg->event_pt >= 0 && packet.payload_type == leg->event_pt) {
        tb_press presses[TB_MAX_PRESSES_PER_PACKET];
        int n = tb_events_receive(&leg->events, packet.ssrc, packet.timestamp, packet.payload, packet.payload_len,
                                  now, presses);
        report(events, row, presses, n, failed);
    } else if (packet.payload_type == PT_PCMU || packet.payload_type == PT_PCMA) {
        const int16_t *table = packet.payload_type == PT_PCMU ? tb_ulaw_decode_table : tb_alaw_decode_table;
        int16_t pcm[DATAGRAM_MAX];
        for (Py_ssize_t i = 0; i < packet.payload_len; i++)
            pcm[i] = table[packet.payload[i]];
        tb_jitter_push(&leg->jitter, packet.ssrc, packet.timestamp, pcm, packet.payload_len);
    } else {
        drop(self, leg);
    }
}

static void drain(Plane *self, Py_ssize_t row, double now, uint32_t arrival_ts, PyObject *events, int *failed)
{
    Leg *leg = self->legs[row];
    for (int batch = 0; batch < MAX_BATCHES_PER_LEG; batch++) {
        for (int i = 0; i < BATCH; i++) /* the only field of the headers recvmmsg reads that it also writes */
            self->msgs[i].msg_hdr.msg_namelen = sizeof(self->sources[i]);
        int n = recvmmsg(leg->fd, self->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                self->totals.recv_errors++;
            return;
        }
        for (int i = 0; i < n; i++)
            datagram(self, row, leg, &self->msgs[i], now, arrival_ts, events, failed);
        if (n < BATCH)
            return;
    }
}

static PyObject *Plane_receive(Plane *self, PyObject *args)
{
    double now;
    PyObject *frames_obj;
    Py_buffer frames;
    if (!check_open(self) || !PyArg_ParseTuple(args, "dO:receive", &now, &frames_obj) || !check_time(now, "now") ||
        tb_get_int16(frames_obj, &frames, 1, self->rows * FRAME_SAMPLES, "frames") < 0)
        return NULL;
    PyObject *events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&frames);
        return NULL;
    }
    int failed = 0;
    uint32_t arrival_ts = (uint32_t)(uint64_t)(int64_t)(now * 8000.0); /* RTP timestamp units, as the Python leg */
    int n = epoll_wait(self->epfd, self->ready, (int)self->capacity, 0);
    if (n < 0 && errno != EINTR)
        self->totals.recv_errors++;
    for (int i = 0; i < n; i++) {
        Py_ssize_t row = self->ready[i].data.u32;
        if (row < self->rows && self->legs[row] != NULL)
            drain(self, row, now, arrival_ts, events, &failed);
    }
    int16_t *out = frames.buf;
    for (Py_ssize_t row = 0; row < self->rows; row++) {
        Leg *leg = self->legs[row];
        int16_t *frame = out + row * FRAME_SAMPLES;
        if (leg == NULL) {
            memset(frame, 0, FRAME_SAMPLES * sizeof(int16_t));
            continue;
        }
        double when;
        tb_press press;
        if (tb_events_next_timer(&leg->events, &when) && when <= now &&
            tb_events_handle_timer(&leg->events, now, &press))
            report(events, row, &press, 1, &failed); /* a press whose end packets were all lost */
        tb_jitter_pop(&leg->jitter, frame);
    }
    PyBuffer_Release(&frames);
    if (failed) {
        Py_DECREF(events);
        return NULL;
    }
    return events;
}

/* Sending --------------------------------------------------------------------------------------------------- */

static PyObject *Plane_send(Plane *self, PyObject *args)
{
    PyObject *frames_obj, *mask_obj;
    Py_buffer frames, mask;
    if (!check_open(self) || !PyArg_ParseTuple(args, "OO:send", &frames_obj, &mask_obj) ||
        tb_get_int16(frames_obj, &frames, 0, self->rows * FRAME_SAMPLES, "frames") < 0)
        return NULL;
    if (tb_get_bytes(mask_obj, &mask, self->rows, "mask") < 0) {
        PyBuffer_Release(&frames);
        return NULL;
    }
    const int16_t *pcm = frames.buf;
    const uint8_t *wanted = mask.buf;
    long sent = 0;
    uint8_t packet[12 + FRAME_SAMPLES];
    for (Py_ssize_t row = 0; row < self->rows; row++) {
        Leg *leg = self->legs[row];
        if (leg == NULL || !wanted[row] || !leg->configured || !leg->sending || !leg->has_remote)
            continue;
        const uint8_t *table = leg->send_pt == PT_PCMU ? tb_ulaw_encode_table : tb_alaw_encode_table;
        const int16_t *frame = pcm + row * FRAME_SAMPLES;
        packet[0] = 0x80; /* V=2, no padding, no extension, no CSRC */
        packet[1] = (uint8_t)leg->send_pt; /* marker 0 */
        packet[2] = (uint8_t)(leg->sequence >> 8);
        packet[3] = (uint8_t)leg->sequence;
        for (int i = 0; i < 4; i++) {
            packet[4 + i] = (uint8_t)(leg->timestamp >> (24 - 8 * i));
            packet[8 + i] = (uint8_t)(leg->ssrc >> (24 - 8 * i));
        }
        for (int i = 0; i < FRAME_SAMPLES; i++)
            packet[12 + i] = table[(uint16_t)frame[i]];
        sent += send_to_remote(self, leg, packet, sizeof(packet));
        /* Sent or lost, the frame's time has passed: the stream moves on either way. */
        leg->has_last_timestamp = 1;
        leg->last_timestamp = leg->timestamp;
        leg->sequence++;
        leg->timestamp += FRAME_SAMPLES;
        leg->packets_sent++;
        leg->octets_sent += FRAME_SAMPLES;
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&frames);
    return PyLong_FromLong(sent);
}

/* Statistics ------------------------------------------------------------------------------------------------ */

static PyObject *Plane_report_block(Plane *self, PyObject *arg)
{
    Leg *leg = leg_of(self, arg);
    if (leg == NULL)
        return NULL;
    if (!leg->stats.has_ssrc)
        Py_RETURN_NONE;
    int fraction = tb_rxstats_close_interval(&leg->stats);
    /* nearbyint rounds half to even, as Python's round() */
    return Py_BuildValue("(kiLLL)", (unsigned long)leg->stats.ssrc, fraction, tb_rxstats_lost(&leg->stats),
                         tb_rxstats_extended_max_seq(&leg->stats), (long long)nearbyint(leg->stats.jitter));
}

static PyObject *address(const struct sockaddr_in *addr)
{
    char host[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &addr->sin_addr, host, sizeof(host)) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(si)", host, (int)ntohs(addr->sin_port));
}

static PyObject *optional_u32(int present, uint32_t value)
{
    if (!present)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(value);
}

static PyObject *Plane_leg_stats(Plane *self, PyObject *arg)
{
    Leg *leg = leg_of(self, arg);
    if (leg == NULL)
        return NULL;
    PyObject *remote = NULL;
    if (leg->has_remote)
        remote = address(&leg->remote);
    else
        remote = Py_NewRef(Py_None);
    if (remote == NULL)
        return NULL;
    const tb_jitter *j = &leg->jitter;
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:O,s:N,s:O,s:O,s:i,s:i,s:L,s:L,s:d,s:N,s:N,s:k,s:k,s:k,"
        "s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i,s:K,s:K,s:N}",
        "packets_received", leg->packets_received, "packets_sent", leg->packets_sent, "octets_sent", leg->octets_sent,
        "packets_dropped", leg->packets_dropped, "send_errors", leg->send_errors,
        "latched", leg->latched ? Py_True : Py_False, "remote", remote,
        "configured", leg->configured ? Py_True : Py_False, "sending", leg->sending ? Py_True : Py_False,
        "send_pt", leg->send_pt, "event_pt", leg->event_pt,
        "ssrc_changes", leg->stats.ssrc_changes, "lost", tb_rxstats_lost(&leg->stats), "jitter", leg->stats.jitter,
        "rx_ssrc", optional_u32(leg->stats.has_ssrc, leg->stats.ssrc),
        "last_timestamp", optional_u32(leg->has_last_timestamp, leg->last_timestamp),
        "ssrc", (unsigned long)leg->ssrc, "sequence", (unsigned long)leg->sequence,
        "timestamp", (unsigned long)leg->timestamp,
        "jitter_pushed", j->pushed, "jitter_late", j->late, "jitter_duplicates", j->duplicates,
        "jitter_resyncs", j->resyncs, "jitter_overflow_samples", j->overflow_samples,
        "jitter_drift_drops", j->drift_drops, "jitter_popped", j->popped, "jitter_underruns", j->underruns,
        "jitter_depth", (int)tb_jitter_depth(j),
        "events_malformed", leg->events.malformed, "events_ignored", leg->events.ignored,
        "last_received", leg->has_last_received ? PyFloat_FromDouble(leg->last_received) : Py_NewRef(Py_None));
}

/* The rows whose peer has sent no RTP for `older_than` seconds (counted from the leg's latest configure when
 * that is later, or no packet ever came): one pass over the rows, so the loop can ask once a second whatever
 * the number of calls. What to do about them (a held call sends nothing) is the call layer's business. */
static PyObject *Plane_silent_rows(Plane *self, PyObject *args)
{
    double now, older_than;
    if (!check_open(self) || !PyArg_ParseTuple(args, "dd:silent_rows", &now, &older_than) ||
        !check_time(now, "now") || !check_time(older_than, "older_than"))
        return NULL;
    if (older_than < 0) {
        PyErr_Format(PyExc_ValueError, "older_than (%g) must not be negative", older_than);
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    if (rows == NULL)
        return NULL;
    double cutoff = now - older_than;
    for (Py_ssize_t row = 0; row < self->rows; row++) {
        const Leg *leg = self->legs[row];
        if (leg == NULL || !leg->configured)
            continue;
        double since = leg->configured_at;
        if (leg->has_last_received && leg->last_received > since)
            since = leg->last_received;
        if (since >= cutoff)
            continue;
        PyObject *item = PyLong_FromSsize_t(row);
        if (item == NULL || PyList_Append(rows, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(rows);
            return NULL;
        }
        Py_DECREF(item);
    }
    return rows;
}

static PyObject *Plane_totals(Plane *self, PyObject *unused)
{
    (void)unused;
    const Totals *t = &self->totals;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "packets_in", t->packets_in, "packets_out",
                         t->packets_out, "packets_dropped", t->packets_dropped, "send_errors", t->send_errors,
                         "recv_errors", t->recv_errors, "bytes_in", t->bytes_in, "bytes_out", t->bytes_out);
}

/* The tick's wait ------------------------------------------------------------------------------------------- */

static PyObject *Plane_sleep_until(Plane *self, PyObject *arg)
{
    (void)self;
    double deadline = PyFloat_AsDouble(arg);
    if ((deadline == -1.0 && PyErr_Occurred()) || !check_time(deadline, "deadline"))
        return NULL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* the clock of Python's time.monotonic() on Linux */
    if (deadline <= (double)now.tv_sec + now.tv_nsec * 1e-9)
        Py_RETURN_NONE;
    struct timespec until;
    until.tv_sec = (time_t)floor(deadline);
    until.tv_nsec = (long)((deadline - floor(deadline)) * 1e9);
    if (until.tv_nsec >= 1000000000L)
        until.tv_nsec = 999999999L;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    do
        rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    while (rc == EINTR);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* The type -------------------------------------------------------------------------------------------------- */

static PyObject *Plane_get_rows(Plane *self, void *c) { (void)c; return PyLong_FromSsize_t(self->rows); }
static PyObject *Plane_get_capacity(Plane *self, void *c) { (void)c; return PyLong_FromSsize_t(self->capacity); }

static PyMethodDef Plane_methods[] = {
    {"add", (PyCFunction)Plane_add, METH_O, "add(fd) -> row: the lowest free row, reading the UDP socket fd."},
    {"remove", (PyCFunction)Plane_remove, METH_O, "remove(row): forget the row (a free row: no-op)."},
    {"configure", (PyCFunction)(void (*)(void))Plane_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(row, host, port, relatch, send_pt, event_pt, sending, *, now=None): the leg's remote and payload\n"
     "types; `now` (default time.monotonic()) restarts the leg's wait for RTP (silent_rows)."},
    {"set_stream", (PyCFunction)Plane_set_stream, METH_VARARGS,
     "set_stream(row, ssrc, sequence, timestamp): the outgoing stream's state."},
    {"receive", (PyCFunction)Plane_receive, METH_VARARGS,
     "receive(now, frames) -> events: read every ready socket, fill frames[row] with each leg's next frame."},
    {"send", (PyCFunction)Plane_send, METH_VARARGS,
     "send(frames, mask) -> int: encode and send frames[row] for each configured, sending row with mask[row]."},
    {"next_sequence", (PyCFunction)Plane_next_sequence, METH_VARARGS,
     "next_sequence(row, payload_len, timestamp) -> (sequence, ssrc) for a packet Python builds."},
    {"timestamp", (PyCFunction)Plane_timestamp, METH_O, "timestamp(row) -> the stream's current timestamp."},
    {"advance", (PyCFunction)Plane_advance, METH_VARARGS, "advance(row, samples): move the media clock on."},
    {"send_raw", (PyCFunction)Plane_send_raw, METH_VARARGS,
     "send_raw(row, data) -> bool: send a built packet to the row's remote now."},
    {"report_block", (PyCFunction)Plane_report_block, METH_O,
     "report_block(row) -> (ssrc, fraction_lost, cumulative_lost, extended_max_seq, jitter) or None."},
    {"leg_stats", (PyCFunction)Plane_leg_stats, METH_O, "leg_stats(row) -> dict of the leg's counters."},
    {"silent_rows", (PyCFunction)Plane_silent_rows, METH_VARARGS,
     "silent_rows(now, older_than) -> [row]: configured rows with no RTP since now - older_than, nor a configure."},
    {"totals", (PyCFunction)Plane_totals, METH_NOARGS, "totals() -> dict of counters over all rows ever."},
    {"sleep_until", (PyCFunction)Plane_sleep_until, METH_O,
     "sleep_until(deadline): sleep, without the GIL, until time.monotonic() reaches deadline."},
    {"close", (PyCFunction)Plane_close, METH_NOARGS, "close(): forget every row and close the epoll fd."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Plane_getset[] = {
    {"rows", (getter)Plane_get_rows, NULL, "1 + the highest row in use (0 when none): the matrices' height.", NULL},
    {"capacity", (getter)Plane_get_capacity, NULL, "The most rows the plane holds.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Plane_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tonebridge._mediaplane.Plane",
    .tp_doc = "Plane(capacity, *, delay_frames=2, max_frames=50, event_timeout=0.5)\n"
              "Every leg's RTP in and out, one call per 20 ms tick.",
    .tp_basicsize = sizeof(Plane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Plane_new,
    .tp_init = (initproc)Plane_init,
    .tp_dealloc = (destructor)Plane_dealloc,
    .tp_methods = Plane_methods,
    .tp_getset = Plane_getset,
};

int tb_plane_add_type(PyObject *module)
{
    if (PyType_Ready(&Plane_Type) < 0)
        return -1;
    Py_INCREF(&Plane_Type);
    return PyModule_AddObject(module, "Plane", (PyObject *)&Plane_Type);
}
