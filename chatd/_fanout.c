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
 *
 * unmask(data, mask, offset) -> bytes XORs `data` with the 4-byte WebSocket
 * masking key `mask`, starting at key byte `offset % 4` (the position in the
 * frame's payload where `data` begins). It holds the GIL (a few hundred
 * bytes take nanoseconds; releasing and retaking the GIL per frame is what
 * made the per-frame native masker slow). Pure-Python equivalent:
 * chatd.frames.unmask_py.
 *
 * split_text_frames(data, max_payload) -> ([payload, ...], consumed) takes the
 * run of complete, final, masked, uncompressed text frames (first byte 0x81,
 * mask bit set, payload length below 65536 and at most max_payload when that
 * is > 0) at the start of `data`, unmasked, and how many bytes they took. It
 * stops at the first frame that is anything else or not complete: autobahn
 * parses the rest (control frames, fragments, binary, compressed or oversize
 * frames, protocol errors). Pure-Python equivalent:
 * chatd.frames.split_text_frames_py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static void xor_into(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
                     const unsigned char *k);

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

static PyObject *
unmask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &mask, &offset))
        return NULL;
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "the masking key is 4 bytes");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out != NULL) {
        const unsigned char *src = data.buf;
        const unsigned char *key = mask.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        unsigned char k[4];
        for (int j = 0; j < 4; j++)
            k[j] = key[(offset + j) & 3];
        xor_into(dst, src, data.len, k);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return out;
}

static void
xor_into(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *k)
{
    uint32_t k32;
    Py_ssize_t i = 0;
    memcpy(&k32, k, 4);
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, src + i, 4);
        w ^= k32;
        memcpy(dst + i, &w, 4);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 3];
}

static PyObject *
split_text_frames(PyObject *self, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t max_payload;
    if (!PyArg_ParseTuple(args, "y*n", &data, &max_payload))
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    const unsigned char *buf = data.buf;
    Py_ssize_t n = data.len, i = 0;
    while (n - i >= 6) {
        const unsigned char *h = buf + i;
        if (h[0] != 0x81 || !(h[1] & 0x80))
            break;
        Py_ssize_t len = h[1] & 0x7f, head = 6;
        if (len == 127)
            break;
        if (len == 126) {
            if (n - i < 8)
                break;
            len = ((Py_ssize_t)h[2] << 8) | h[3];
            if (len < 126)
                break; /* not minimal: autobahn decides */
            head = 8;
        }
        if (max_payload > 0 && len > max_payload)
            break;
        if (n - i < head + len)
            break;
        PyObject *payload = PyBytes_FromStringAndSize(NULL, len);
        if (payload == NULL)
            goto fail;
        xor_into((unsigned char *)PyBytes_AS_STRING(payload), h + head, len, h + head - 4);
        int r = PyList_Append(list, payload);
        Py_DECREF(payload);
        if (r < 0)
            goto fail;
        i += head + len;
    }
    PyBuffer_Release(&data);
    return Py_BuildValue("(Nn)", list, i);
fail:
    Py_DECREF(list);
    PyBuffer_Release(&data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_text_frames", split_text_frames, METH_VARARGS,
     "split_text_frames(data, max_payload) -> ([payload, ...], consumed)\n\n"
     "The complete masked final text frames at the start of data, unmasked."},
    {"unmask", unmask, METH_VARARGS,
     "unmask(data, mask, offset) -> bytes\n\n"
     "XOR data with the 4-byte masking key, starting at key byte offset % 4."},
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
