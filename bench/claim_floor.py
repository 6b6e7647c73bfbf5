"""The floor for a racer in Python: the interpreter, libpq through ctypes, one statement.

    python claim_floor.py URL -c SQL      (arguments as psql takes them)

Connects, runs SQL, prints the first row's first value (if any), exits. No imports beyond
ctypes: what any Python `schedctl run` pays at the least. run_bench.py races it beside psql.
"""

import ctypes
import os
import sys


def libpq_path() -> str:
    """Find libpq as schedctl does: psycopg[binary]'s bundled copy, else the system's."""
    for entry in sys.path:
        libs = os.path.join(entry, "psycopg_binary.libs")
        if os.path.isdir(libs):
            for name in os.listdir(libs):
                if name.startswith("libpq"):
                    return os.path.join(libs, name)
    return "libpq.so.5"


pq = ctypes.CDLL(libpq_path())
pq.PQconnectdb.restype = ctypes.c_void_p
pq.PQconnectdb.argtypes = [ctypes.c_char_p]
pq.PQstatus.argtypes = [ctypes.c_void_p]
pq.PQerrorMessage.restype = ctypes.c_char_p
pq.PQerrorMessage.argtypes = [ctypes.c_void_p]
pq.PQexec.restype = ctypes.c_void_p
pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQresultStatus.argtypes = [ctypes.c_void_p]
pq.PQntuples.argtypes = [ctypes.c_void_p]
pq.PQgetvalue.restype = ctypes.c_char_p
pq.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
pq.PQfinish.argtypes = [ctypes.c_void_p]

conn = pq.PQconnectdb(sys.argv[1].encode())
if pq.PQstatus(conn) != 0:  # CONNECTION_OK
    sys.stderr.write(pq.PQerrorMessage(conn).decode())
    os._exit(1)
result = pq.PQexec(conn, sys.argv[3].encode())
if pq.PQresultStatus(result) not in (1, 2):  # PGRES_COMMAND_OK, PGRES_TUPLES_OK
    sys.stderr.write(pq.PQerrorMessage(conn).decode())
    os._exit(1)
if pq.PQntuples(result):
    sys.stdout.write(pq.PQgetvalue(result, 0, 0).decode() + "\n")
sys.stdout.flush()
pq.PQfinish(conn)
os._exit(0)
