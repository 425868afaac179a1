"""Produce UserSigs with the official Python package, for tests/official_vectors.rs.

Exact command (from this directory), with a throwaway virtualenv:

    python3 -m venv /tmp/tlsvenv
    /tmp/tlsvenv/bin/pip install tls-sig-api-v2==1.1
    /tmp/tlsvenv/bin/python gen_python_vectors.py > python_vectors.txt

The package reads the clock itself, so time.time is pinned to TIME first.
Output: one `name<TAB>usersig` line per vector.
"""

import time

TIME = 1600000000
time.time = lambda: TIME

import TLSSigAPIv2  # noqa: E402  (must see the pinned clock)

APP = 1400000000
KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"

api = TLSSigAPIv2.TLSSigAPIv2(APP, KEY)
vectors = [
    ("py_plain_xiaojun", api.gen_sig("xiaojun", 180 * 86400)),
    ("py_userbuf_abc", api.gen_sig_with_userbuf("xiaojun", 180 * 86400, b"abc")),
    ("py_plain_unicode", api.gen_sig("\u7528\u6237_1", 86400)),
    ("py_userbuf_binary", api.gen_sig_with_userbuf("bin-user", 3600, bytes(range(256)))),
]
for name, sig in vectors:
    print(name + "\t" + sig)
