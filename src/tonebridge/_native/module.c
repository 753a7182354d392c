/* The module tonebridge._mediaplane: its initialisation and the buffer checks every entry point uses. */
#include "common.h"

static int is_native_int16(const char *format)
{
    if (format == NULL)
        return 0;
    if (format[0] == '@' || format[0] == '=')
        format++;
#if PY_LITTLE_ENDIAN
    else if (format[0] == '<')
        format++;
#else
    else if (format[0] == '>' || format[0] == '!')
        format++;
#endif
    return format[0] == 'h' && format[1] == '\0';
}

static int check_view(Py_buffer *view, int writable, Py_ssize_t min_items, const char *what)
{
    if (writable && view->readonly) {
        PyErr_Format(PyExc_ValueError, "%s must be a writable buffer", what);
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", what);
        return -1;
    }
    Py_ssize_t items = view->len / view->itemsize;
    if (items < min_items) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd items, at least %zd are needed", what, items, min_items);
        return -1;
    }
    return 0;
}

int tb_get_int16(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t min_items, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) < 0)
        return -1;
    if (view->itemsize != 2 || !is_native_int16(view->format)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int16 buffer, got format %s", what,
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    if (check_view(view, writable, min_items, what) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int tb_get_bytes(PyObject *obj, Py_buffer *view, Py_ssize_t min_items, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) < 0)
        return -1;
    if (view->itemsize != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a buffer of bytes (uint8 or bool), got itemsize %zd", what,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (check_view(view, 0, min_items, what) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

int tb_u32_arg(PyObject *obj, void *out)
{
    unsigned long value = PyLong_AsUnsignedLongMask(obj);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return 0;
    *(uint32_t *)out = (uint32_t)value;
    return 1;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "tonebridge._mediaplane",
    "The media plane's hot path in C: G.711, jitter buffers, RFC 4733 and RTP receive statistics, and the\n"
    "Plane that receives and sends every leg's RTP once per 20 ms tick.",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__mediaplane(void)
{
    tb_g711_init();
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (tb_g711_add_functions(module) < 0 || tb_jitter_add_type(module) < 0 || tb_events_add_type(module) < 0 ||
        tb_rxstats_add_type(module) < 0 || tb_plane_add_type(module) < 0 ||
        PyModule_AddIntConstant(module, "FRAME_SAMPLES", FRAME_SAMPLES) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
