#!/usr/bin/env python3
"""Writes the seed corpus (realistic inputs) into fuzz/corpus/<target>/seed-*.

Run from fuzz/: python3 seeds/make_seeds.py. Seeds are real frames and packets as drivers
send them, statements from pgcloak's own SQL tests, and COPY rows in text and CSV.
"""
import hashlib, os, re, struct, glob, random

def frame(tag, body=b""):
    return tag + struct.pack(">I", len(body) + 4) + body

def cstr(s):
    return s.encode() + b"\0"

def query(sql):
    return cstr(sql)

def parse(name, sql, oids=()):
    return cstr(name) + cstr(sql) + struct.pack(">H", len(oids)) + b"".join(struct.pack(">I", o) for o in oids)

def bind(portal, stmt, formats, params, results):
    out = cstr(portal) + cstr(stmt) + struct.pack(">H", len(formats))
    out += b"".join(struct.pack(">H", f) for f in formats)
    out += struct.pack(">H", len(params))
    for p in params:
        out += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    out += struct.pack(">H", len(results)) + b"".join(struct.pack(">H", f) for f in results)
    return out

def data_row(fields):
    out = struct.pack(">H", len(fields))
    for f in fields:
        out += struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f
    return out

def row_description(fields):
    out = struct.pack(">H", len(fields))
    for name, table, attnum, typ in fields:
        out += cstr(name) + struct.pack(">IhIhih", table, attnum, typ, -1, -1, 0)
    return out

def error(fields):
    return b"".join(code + cstr(v) for code, v in fields) + b"\0"

def binary_array(elements, oid=25):
    out = struct.pack(">iiIii", 1, int(any(e is None for e in elements)), oid, len(elements), 1)
    for e in elements:
        out += struct.pack(">i", -1) if e is None else struct.pack(">i", len(e)) + e
    return out

def write(target, seeds):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        name = "seed-" + hashlib.sha1(s).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(s)

BIND = bind("", "s1", [0], [b"alice@example.com", None], [0])
client_stream = (frame(b"P", parse("", "INSERT INTO users (email) VALUES ($1)", [25])) + frame(b"B", BIND)
                 + frame(b"D", b"P\0") + frame(b"E", b"\0\0\0\0\0") + frame(b"S"))
simple = frame(b"Q", query("SELECT email FROM users WHERE id = 1"))
server_stream = (frame(b"1") + frame(b"2") + frame(b"T", row_description([("email", 16385, 2, 25)]))
                 + frame(b"D", data_row([b"pgc1$d$AAAAAAAA$" + b"A" * 30])) + frame(b"C", b"SELECT 1\0")
                 + frame(b"Z", b"I"))
copy_stream = frame(b"d", b"a@x\tAnn\n") + frame(b"d", b"b@y\tBob\n") + frame(b"c")
write("frame_scanner", [bytes([f, m, s0, s1]) + st
                        for st in (client_stream, simple, server_stream, copy_stream, client_stream + simple)
                        for f, m, s0, s1 in ((0, 0, 0, 0), (4, 0xff, 0x12, 0x34), (5, 0x10, 0, 7))])

write("frontend_messages", [
    b"\0" + query("SELECT 1"), b"\0" + query("INSERT INTO users (email, first_name) VALUES ('a@x', 'Ann')"),
    b"\1" + parse("s1", "SELECT * FROM users WHERE email = $1", [25]), b"\1" + parse("", "SELECT $1::text", [0]),
    b"\2" + BIND, b"\2" + bind("p", "s", [1], [b"\0\0\0\x2a"], [1, 0]),
    b"\2" + bind("", "", [], [], []),
    b"\3" + b'{a@x,"b c",NULL,"q\\"x"}', b"\3{}", b"\3" + b'{"",NULL}',
    b"\4" + binary_array([b"a@x", None, b"b"]), b"\4" + binary_array([b"x"], 1043),
    b"\4" + struct.pack(">iiI", 0, 0, 25),
])
write("backend_messages", [
    b"\0" + data_row([b"42", None, b"pgc1$r$AAAAAAAA$" + b"B" * 40]), b"\0" + data_row([]),
    b"\1" + row_description([("email", 16385, 2, 25), ("?column?", 0, 0, 23)]),
    b"\2" + error([(b"S", "ERROR"), (b"C", "23505"), (b"M", "duplicate key"), (b"D", "Key (email)=(pgc1$d$AAAAAAAA$x) already exists.")]),
    b"\2" + error([(b"S", "NOTICE"), (b"C", "00000"), (b"M", "hi")]),
])

def startup(version, params):
    body = struct.pack(">I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body
write("startup_packet", [
    startup(196608, [("user", "alice"), ("database", "app"), ("application_name", "psql")]),
    startup(196610, [("user", "bob")]), startup(131072, []),
    struct.pack(">II", 8, 80877103), struct.pack(">II", 8, 80877104),
    struct.pack(">IIII", 16, 80877102, 42, 0xdeadbeef), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"", b"\0\0\0\x08",
])

write("envelope", [
    bytes([0, 0, 20, ord("x")]) + b"alice@example.com", bytes([1, 0, 3, ord("A")]) + b"Ann",
    bytes([2, 1, 0, 0]) + "Zoë Ünicode".encode(), bytes([1, 0, 0, ord("p")]),
    b"pgc1$r$AAAAAAAA$" + b"A" * 40, b"pgc1$d$Ab-_9zZ0$" + b"A" * 22, b"pgc1$x$AAAAAAAA$AAAA",
])

def copy_seed(fmt, delim, quote, esc, null, fields, seed, data):
    return bytes([fmt, delim, quote, esc, null, fields, seed]) + data
write("copy_in", [
    copy_seed(0, 0, 0, 0, 0, 0x13, 1, b"a@x\tAnn\tSmith\nb@y\t\\N\tJones\n\\.\n"),
    copy_seed(0, 0, 0, 0, 0, 0x11, 9, b"esc\\tape\\n\\\\\tx\n"),
    copy_seed(1, 0, 0, 0, 0, 0x13, 3, b'"a,b@x",Ann,"multi\nline"\n,,\n'),
    copy_seed(3, 0x81, 0, 0, 0, 0x13, 5, b"email,first_name\na@x,Ann\n"),
    copy_seed(1, 0, 0x80, 0x80, 0x81, 0x11, 2, b'"say ""hi""",x\r\n'),
    copy_seed(1, 0, 0x80 + 16, 0, 0, 0x11, 2, b"pgc1$d$AAAAAAAA$AAAA,x\n"),
])

sqls = set()
for path in glob.glob("../src/sql/tests.rs") + glob.glob("../src/sql/tests/*.rs") + glob.glob("../tests/*.rs"):
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', text):
        s = m.group(1)
        if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|COPY|MERGE|CREATE|ALTER|DROP|PREPARE|EXECUTE|EXPLAIN|TABLE|VALUES|DECLARE|SET)\b", s, re.I):
            try:
                sqls.add(s.encode().decode("unicode_escape").encode("latin-1").decode("utf-8").encode())
            except Exception:
                sqls.add(s.encode())
sqls = sorted(sqls)
random.Random(9).shuffle(sqls)
write("sql_analysis", sqls[:600])

rng = random.Random(10)
write("session_tracker", [bytes(rng.randrange(256) for _ in range(n)) for n in (16, 64, 256, 1024, 4096)])
print({t: len(os.listdir(os.path.join("corpus", t))) for t in os.listdir("corpus")})
