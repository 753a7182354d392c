/* G.711 mu-law and A-law tables, built at import exactly as media/g711.py builds its numpy tables.
 *
 * Encode tables are indexed by the int16 sample's bit pattern (uint16), decode tables by the code. The
 * segment/step rules are those of ITU-T G.711 §2 (Tables 1a/1b, 2a/2b); the tests compare every entry
 * with the Python tables. */
#include "common.h"

uint8_t tb_ulaw_encode_table[65536];
uint8_t tb_alaw_encode_table[65536];
int16_t tb_ulaw_decode_table[256];
int16_t tb_alaw_decode_table[256];

/* The segment (0-7, 8 beyond the last) holding a magnitude; segment s ends below first_top << s. */
static int segment(int32_t magnitude, int32_t first_top)
{
    for (int s = 0; s < 8; s++)
        if (magnitude <= (first_top << s) - 1)
            return s;
    return 8;
}

static uint8_t ulaw_encode_one(int32_t sample)
{
    int32_t x = sample >> 2; /* the 14-bit coder input; >> of a negative int floors, as numpy's does */
    int negative = x < 0;
    int32_t magnitude = (negative ? -x : x);
    if (magnitude > 8159)
        magnitude = 8159;
    magnitude += 33; /* the bias that puts the segment edges on powers of two */
    int seg = segment(magnitude, 0x40);
    int32_t code = seg >= 8 ? 0x7F : (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F);
    return (uint8_t)(negative ? code ^ 0x7F : code ^ 0xFF);
}

static uint8_t alaw_encode_one(int32_t sample)
{
    int32_t x = sample >> 3; /* the 13-bit coder input */
    int negative = x < 0;
    int32_t magnitude = negative ? -x - 1 : x; /* one's complement: -1 and 0 share a step */
    int seg = segment(magnitude, 0x20);
    int32_t step = (seg < 2 ? magnitude >> 1 : magnitude >> seg) & 0x0F;
    int32_t code = seg >= 8 ? 0x7F : (seg << 4) | step;
    return (uint8_t)(negative ? code ^ 0x55 : code ^ 0xD5);
}

void tb_g711_init(void)
{
    for (int32_t code = 0; code < 256; code++) {
        int32_t inverted = ~code & 0xFF;
        int32_t seg = (inverted >> 4) & 0x07, step = inverted & 0x0F;
        int32_t magnitude = (((2 * step + 33) << seg) - 33) * 4;
        tb_ulaw_decode_table[code] = (int16_t)((inverted & 0x80) ? -magnitude : magnitude);

        int32_t a = code ^ 0x55; /* even bits are inverted on the line */
        seg = (a >> 4) & 0x07;
        step = a & 0x0F;
        magnitude = (seg == 0 ? 2 * step + 1 : (2 * step + 33) << (seg - 1)) * 8;
        tb_alaw_decode_table[code] = (int16_t)((a & 0x80) ? magnitude : -magnitude); /* sign set: positive */
    }
    for (int32_t sample = -32768; sample < 32768; sample++) {
        uint16_t index = (uint16_t)(int16_t)sample;
        tb_ulaw_encode_table[index] = ulaw_encode_one(sample);
        tb_alaw_encode_table[index] = alaw_encode_one(sample);
    }
}

static PyObject *encode_with(PyObject *arg, const uint8_t *table)
{
    Py_buffer view;
    if (tb_get_int16(arg, &view, 0, 0, "samples") < 0)
        return NULL;
    Py_ssize_t n = view.len / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out != NULL) {
        const int16_t *pcm = view.buf;
        uint8_t *codes = (uint8_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++)
            codes[i] = table[(uint16_t)pcm[i]];
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *decode_with(PyObject *arg, const int16_t *table)
{
    Py_buffer view;
    if (tb_get_bytes(arg, &view, 0, "codes") < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, view.len * 2);
    if (out != NULL) {
        const uint8_t *codes = view.buf;
        int16_t *pcm = (int16_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < view.len; i++)
            pcm[i] = table[codes[i]];
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *ulaw_encode(PyObject *m, PyObject *arg) { (void)m; return encode_with(arg, tb_ulaw_encode_table); }
static PyObject *alaw_encode(PyObject *m, PyObject *arg) { (void)m; return encode_with(arg, tb_alaw_encode_table); }
static PyObject *ulaw_decode(PyObject *m, PyObject *arg) { (void)m; return decode_with(arg, tb_ulaw_decode_table); }
static PyObject *alaw_decode(PyObject *m, PyObject *arg) { (void)m; return decode_with(arg, tb_alaw_decode_table); }

static PyMethodDef g711_methods[] = {
    {"ulaw_encode", ulaw_encode, METH_O, "ulaw_encode(samples) -> bytes: int16 samples to mu-law codes."},
    {"ulaw_decode", ulaw_decode, METH_O, "ulaw_decode(codes) -> bytes: mu-law codes to native int16 samples."},
    {"alaw_encode", alaw_encode, METH_O, "alaw_encode(samples) -> bytes: int16 samples to A-law codes."},
    {"alaw_decode", alaw_decode, METH_O, "alaw_decode(codes) -> bytes: A-law codes to native int16 samples."},
    {NULL, NULL, 0, NULL},
};

int tb_g711_add_functions(PyObject *module) { return PyModule_AddFunctions(module, g711_methods); }
