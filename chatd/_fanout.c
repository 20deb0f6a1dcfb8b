/* chatd._fanout: the fan-out's per-recipient loop in C (optional accelerator).
 *
 * send_all(conns, exclude, frame[, frames]) hands one ready WebSocket frame to
 * every connection in the sequence `conns` except `exclude`, with one
 * non-blocking send(2) per connection, and returns what it could not finish,
 * for Python to handle exactly as ChatProtocol.send_direct does.
 *
 * With `frames` (a tuple of bytes, or None), a connection gets
 * frames[conn.deflate_bits] instead (the message compressed for its
 * permessage-deflate window; index 0 and anything out of range or not bytes:
 * `frame`), so a room with compressing and plain members is still one pass.
 * Codes below then count bytes of the connection's own frame.
 *
 * A connection is sent to here only when conn._fd is a non-negative int (else
 * it is left to Python untouched). ChatProtocol keeps _fd set to its socket's
 * descriptor only while its deliver_frame is the direct send (open, plain
 * TCP/UNIX, peer reading) AND Twisted's write buffer for it is empty (see
 * ChatProtocol.arm/disarm), so nothing Twisted buffered is ever overtaken;
 * one attribute read per connection is all this loop looks at.
 * The descriptors are gathered first; the sends then run with the GIL released
 * (no Python code runs in between, and only the reactor thread, which is in
 * this call, closes these sockets).
 *
 * Returns None when every eligible send completed and nobody was left over,
 * else a list of (conn, code) pairs:
 *   code == -1  not eligible: call conn.deliver_frame(frame)
 *   code == -2  send failed with an error other than EAGAIN/EINTR: let Twisted
 *               see it (transport.write(frame))
 *   code >= 0   that many bytes were sent (0 for EAGAIN/EINTR): write the rest
 *               with transport.write(frame[code:])
 * Pure-Python equivalent: chatd.fanout.send_all_py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static PyObject *str_fd;
static PyObject *str_bits;

/* 1: conn may be sent to directly (its descriptor in *fd), 0: not, -1: error set */
static int
eligible(PyObject *conn, int *fd)
{
    PyObject *o = PyObject_GetAttr(conn, str_fd);
    if (o == NULL)
        return -1;
    long v = PyLong_Check(o) ? PyLong_AsLong(o) : -1;
    Py_DECREF(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > INT_MAX)
        return 0;
    *fd = (int)v;
    return 1;
}

static int
add_left(PyObject **left, PyObject *conn, Py_ssize_t code)
{
    if (*left == NULL && (*left = PyList_New(0)) == NULL)
        return -1;
    PyObject *pair = Py_BuildValue("(On)", conn, code);
    if (pair == NULL)
        return -1;
    int r = PyList_Append(*left, pair);
    Py_DECREF(pair);
    return r;
}

static PyObject *
send_all(PyObject *self, PyObject *args)
{
    PyObject *conns, *exclude, *frames = NULL;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "OOy*|O:send_all", &conns, &exclude, &frame, &frames))
        return NULL;
    if (frames == Py_None)
        frames = NULL;
    if (frames != NULL && !PyTuple_Check(frames)) {
        PyErr_SetString(PyExc_TypeError, "frames must be a tuple or None");
        PyBuffer_Release(&frame);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(conns, "conns must be a sequence");
    if (seq == NULL) {
        PyBuffer_Release(&frame);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *left = NULL;
    PyObject *result;
    int *fds = NULL;
    Py_ssize_t *idx = NULL, *sent = NULL;
    int *errs = NULL;
    const char **bufs = NULL;
    Py_ssize_t *lens = NULL;
    if (n > 0) {
        fds = PyMem_Malloc(n * sizeof(int));
        idx = PyMem_Malloc(n * sizeof(Py_ssize_t));
        sent = PyMem_Malloc(n * sizeof(Py_ssize_t));
        errs = PyMem_Malloc(n * sizeof(int));
        bufs = PyMem_Malloc(n * sizeof(char *));
        lens = PyMem_Malloc(n * sizeof(Py_ssize_t));
        if (!fds || !idx || !sent || !errs || !bufs || !lens) {
            PyErr_NoMemory();
            goto error;
        }
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *conn = items[i];
        if (conn == exclude)
            continue;
        int fd = -1;
        int ok = eligible(conn, &fd);
        if (ok < 0)
            goto error;
        if (ok) {
            const char *buf = frame.buf;
            Py_ssize_t len = frame.len;
            if (frames != NULL) {
                PyObject *o = PyObject_GetAttr(conn, str_bits);
                if (o == NULL)
                    goto error;
                long k = PyLong_Check(o) ? PyLong_AsLong(o) : 0;
                Py_DECREF(o);
                if (k == -1 && PyErr_Occurred())
                    goto error;
                if (k > 0 && k < PyTuple_GET_SIZE(frames)) {
                    PyObject *f = PyTuple_GET_ITEM(frames, k);
                    if (PyBytes_Check(f)) {
                        buf = PyBytes_AS_STRING(f);
                        len = PyBytes_GET_SIZE(f);
                    }
                }
            }
            fds[m] = fd;
            bufs[m] = buf;
            lens[m] = len;
            idx[m++] = i;
        }
        else if (add_left(&left, conn, -1) < 0)
            goto error;
    }
    /* (the frames stay alive: the caller holds `frames`, and no Python code runs) */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < m; k++) {
        ssize_t r = send(fds[k], bufs[k], (size_t)lens[k], MSG_DONTWAIT | MSG_NOSIGNAL);
        sent[k] = r;
        errs[k] = r < 0 ? errno : 0;
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < m; k++) {
        if (sent[k] == lens[k])
            continue;
        Py_ssize_t code;
        if (sent[k] >= 0)
            code = sent[k];
        else if (errs[k] == EAGAIN || errs[k] == EWOULDBLOCK || errs[k] == EINTR)
            code = 0;
        else
            code = -2;
        if (add_left(&left, items[idx[k]], code) < 0)
            goto error;
    }
    if (left == NULL) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    else
        result = left;
    goto done;
error:
    Py_XDECREF(left);
    result = NULL;
done:
    /* one cleanup for both ways out */
    PyMem_Free(fds);
    PyMem_Free(idx);
    PyMem_Free(sent);
    PyMem_Free(errs);
    PyMem_Free(bufs);
    PyMem_Free(lens);
    Py_DECREF(seq);
    PyBuffer_Release(&frame);
    return result;
}

static PyMethodDef methods[] = {
    {"send_all", send_all, METH_VARARGS,
     "send_all(conns, exclude, frame[, frames]) -> None | [(conn, code), ...]\n\n"
     "Send one ready frame (or frames[conn.deflate_bits]) to every eligible\n"
     "connection; see chatd/_fanout.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chatd._fanout",
    "The fan-out's per-recipient send loop in C (optional accelerator).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (!(str_fd = PyUnicode_InternFromString("_fd")))
        return NULL;
    if (!(str_bits = PyUnicode_InternFromString("deflate_bits")))
        return NULL;
    return PyModule_Create(&module);
}
