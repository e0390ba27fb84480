#!/usr/bin/env python3
"""Minimal PostgreSQL wire-protocol clients for benches/memory.sh (standard library only).

  pgclient.py idle PORT COUNT [CONCURRENCY [QUERY]]
      Opens COUNT authenticated sessions (trust auth, user/database postgres) to
      127.0.0.1:PORT, CONCURRENCY handshakes at a time (default 32), and prints "READY COUNT"
      once every session has had ReadyForQuery (and, if QUERY is given, has run QUERY once
      as a simple Query). Then idles until SIGTERM/SIGINT, sends each session a
      Terminate and exits.

  pgclient.py stream PORT SQL
      Sends SQL as one simple Query and discards the DataRows as they arrive (never
      holding more than one read buffer). Prints "rows=N bytes=N seconds=S".

  pgclient.py statements PORT COUNT SESSIONS SIZE
      Sends COUNT distinct statements of about SIZE bytes on the `people` table of
      benches/pgbench-pii-schema.sql, spread over SESSIONS concurrent sessions, each as a
      simple Query that must succeed: even ones `SELECT id, email_pii FROM people WHERE id
      IN (...)` (no PII value in the text: a cacheable shape), odd ones `... WHERE
      email_pii IN ('...', ...)` (PII literals, which pgcloak encrypts and never caches).
      Prints "statements=N seconds=S", then holds the sessions open until a line arrives
      on stdin (or stdin closes) and closes them.
"""

import asyncio
import signal
import socket
import struct
import sys
import time

USER = "postgres"
DATABASE = "postgres"


def startup_message():
    params = f"user\0{USER}\0database\0{DATABASE}\0application_name\0pgcloak-bench\0\0".encode()
    return struct.pack("!ii", 8 + len(params), 196608) + params


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}"


TERMINATE = b"X" + struct.pack("!i", 4)


async def read_until_ready(reader):
    while True:
        header = await reader.readexactly(5)
        tag, length = header[:1], struct.unpack("!i", header[1:])[0]
        body = await reader.readexactly(length - 4)
        if tag == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code != 0:
                raise RuntimeError(f"server asked for authentication method {code}; only trust is supported")
        elif tag == b"E":
            raise RuntimeError(error_text(body))
        elif tag == b"Z":
            return


def query_message(sql):
    query = sql.encode() + b"\0"
    return b"Q" + struct.pack("!i", 4 + len(query)) + query


async def open_session(port, slots, sql):
    async with slots:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(startup_message())
        await writer.drain()
        await read_until_ready(reader)
        if sql:
            writer.write(query_message(sql))
            await writer.drain()
            await read_until_ready(reader)
        return reader, writer


async def idle(port, count, concurrency, sql):
    slots = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    sessions = await asyncio.gather(*(open_session(port, slots, sql) for _ in range(count)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {len(sessions)} in {time.monotonic() - started:.1f}s", flush=True)
    await stop.wait()

    for _, writer in sessions:
        writer.write(TERMINATE)
    for _, writer in sessions:
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except OSError:
            pass


def recv_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return bytes(data)


def stream(port, sql):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(startup_message())
    while True:  # startup: up to ReadyForQuery
        tag, length = struct.unpack("!ci", recv_exact(sock, 5))
        body = recv_exact(sock, length - 4)
        if tag == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise RuntimeError("only trust authentication is supported")
        if tag == b"E":
            raise RuntimeError(error_text(body))
        if tag == b"Z":
            break

    sock.sendall(query_message(sql))
    started = time.monotonic()
    rows = total = 0
    buf = memoryview(bytearray(1 << 20))
    have = 0      # bytes in buf
    pos = 0       # start of the next unparsed message in buf
    skip = 0      # body bytes of the current message still to discard (already counted)
    error = None
    done = False
    while not done:
        if pos == have:
            pos = have = 0
        elif pos > len(buf) // 2:
            buf[: have - pos] = buf[pos:have]
            have, pos = have - pos, 0
        n = sock.recv_into(buf[have:])
        if n == 0:
            raise RuntimeError("connection closed mid-result")
        have += n
        total += n
        while True:
            if skip:
                take = min(skip, have - pos)
                skip -= take
                pos += take
                if skip:
                    break
            if have - pos < 5:
                break
            tag = buf[pos]
            length = struct.unpack_from("!i", buf, pos + 1)[0]
            if tag == ord("D"):
                rows += 1
                pos += 5
                skip = length - 4
                continue
            if have - pos < 1 + length:  # a small message split across reads: read more
                break
            if tag == ord("E"):
                error = error_text(bytes(buf[pos + 5 : pos + 1 + length]))
            pos += 1 + length
            if tag == ord("Z"):
                done = True
                break
    elapsed = time.monotonic() - started
    sock.sendall(TERMINATE)
    sock.close()
    if error:
        raise RuntimeError(error)
    print(f"rows={rows} bytes={total} seconds={elapsed:.2f}")


def big_statement(number, size):
    items, i = [], 0
    length = 0
    while length < size:
        item = str(number * 1_000_000 + i) if number % 2 == 0 else f"'u{number}-{i}@example.com'"
        items.append(item)
        length += len(item) + 2
        i += 1
    column = "id" if number % 2 == 0 else "email_pii"
    return f"SELECT id, email_pii FROM people WHERE {column} IN ({', '.join(items)})"


async def run_statements(port, count, sessions, size):
    started = time.monotonic()
    slots = asyncio.Semaphore(sessions)
    opened = await asyncio.gather(*(open_session(port, slots, None) for _ in range(sessions)))

    async def drive(index, reader, writer):
        for number in range(index, count, sessions):
            writer.write(query_message(big_statement(number, size)))
            await writer.drain()
            await read_until_ready(reader)

    await asyncio.gather(*(drive(i, r, w) for i, (r, w) in enumerate(opened)))
    print(f"statements={count} seconds={time.monotonic() - started:.2f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _, writer in opened:
        writer.write(TERMINATE)
        await writer.drain()
        writer.close()


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "idle":
        concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 32
        sql = sys.argv[5] if len(sys.argv) > 5 else None
        asyncio.run(idle(int(sys.argv[2]), int(sys.argv[3]), concurrency, sql))
    elif len(sys.argv) == 4 and sys.argv[1] == "stream":
        stream(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "statements":
        port, count, sessions, size = (int(a) for a in sys.argv[2:])
        asyncio.run(run_statements(port, count, sessions, size))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError, EOFError) as e:
        sys.exit(f"pgclient: {e}")
