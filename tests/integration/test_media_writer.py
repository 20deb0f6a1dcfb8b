"""Media: the upload body's file part written by the Writer's thread (never on the
reactor), the socket paused while too much waits for the disk, errors reported at
the end. A real thread and the real reactor; no sockets."""

from __future__ import annotations

import os
import threading

import pytest_twisted
from twisted.internet import reactor

from chatd.media import multipart
from chatd.media.multipart import FormSink, QueuedFile, Writer


class Flow:
    """What a transport would be asked: pauses and resumes (on the reactor)."""

    def __init__(self):
        self.calls = []

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")


def _form(boundary: bytes, data: bytes, name: str) -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="tmp_1.bin"\r\n\r\n'
        + data
        + b"\r\n--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
        + name.encode()
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


@pytest_twisted.ensureDeferred
async def test_a_body_through_the_writer_thread_with_backpressure(tmp_path, monkeypatch):
    """Fed in 64 KiB chunks faster than a held writer drains them: the socket is
    paused once past HIGH_WATER and resumed below LOW_WATER; the file is whole
    once take() fires, written by the writer thread."""
    monkeypatch.setattr(multipart, "HIGH_WATER", 256 << 10)
    monkeypatch.setattr(multipart, "LOW_WATER", 64 << 10)
    writer, flow = Writer(reactor), Flow()
    gate = threading.Event()
    writer.submit(gate.wait)  # the disk is slow: nothing written until the gate opens
    threads = []
    real_write = QueuedFile._write

    def write(self, data):
        threads.append(threading.current_thread().name)
        real_write(self, data)

    monkeypatch.setattr(QueuedFile, "_write", write)
    data = os.urandom(1 << 20)
    body = _form(b"B", data, "报告.bin")

    def opener(directory):
        return QueuedFile(writer, directory, flow.pause, flow.resume)

    sink = FormSink(b"B", str(tmp_path), 1 << 22, opener=opener)
    try:
        for at in range(0, len(body), 1 << 16):
            sink.write(body[at : at + (1 << 16)])
        assert flow.calls == ["pause"]  # once, however many chunks came after
        gate.set()
        form = await sink.take()
        assert flow.calls == ["pause", "resume"]
        assert open(form.path, "rb").read() == data and form.fields == {"name": "报告.bin"}
        assert set(threads) == {"chatd-media-writer"}
        sink.close()
        assert os.path.exists(form.path)  # handed over: the caller's to remove
    finally:
        gate.set()
        writer.stop()


@pytest_twisted.ensureDeferred
async def test_a_write_error_comes_out_of_take_and_a_cut_body_leaves_nothing(tmp_path):
    writer, flow = Writer(reactor), Flow()

    def opener(directory):
        return QueuedFile(writer, directory, flow.pause, flow.resume)

    try:
        missing = FormSink(b"B", str(tmp_path / "gone"), 1 << 20, opener=opener)
        missing.write(_form(b"B", b"data", "n"))
        try:
            await missing.take()
        except OSError:
            pass
        else:
            raise AssertionError("an unwritable directory must fail the upload")
        cut = FormSink(b"B", str(tmp_path), 1 << 20, opener=opener)
        cut.write(_form(b"B", b"x" * 100_000, "n")[:50_000])
        cut.close()  # the connection was lost
        done = QueuedFile(writer, str(tmp_path), flow.pause, flow.resume)
        done.discard()
        assert await done.flushed() is None  # everything queued before it is done
        assert list(tmp_path.iterdir()) == [] and flow.calls == []
    finally:
        writer.stop()
