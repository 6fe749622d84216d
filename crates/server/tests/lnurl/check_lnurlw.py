"""Validates Satchel's LNURL-withdraw answers with the LNbits team's `lnurl` package (PyPI).

argv: LNURL, expected URL, offer JSON, OK JSON, ERROR JSON. Exits non-zero on any mismatch.
"""
import json
import sys

import lnurl
from lnurl import LnurlResponse

code, url, offer, ok, err = sys.argv[1:6]
decoded = str(lnurl.decode(code))
assert decoded == url, (decoded, url)
# The same URL encoded by the third party gives the same LNURL (case-insensitively).
assert str(lnurl.encode(url).bech32).upper() == code.upper(), lnurl.encode(url)

o = json.loads(offer)
r = LnurlResponse.from_dict(o)
assert type(r).__name__ == "LnurlWithdrawResponse", type(r)
assert str(r.callback) == o["callback"], (r.callback, o["callback"])
assert r.k1 == o["k1"]
assert int(r.maxWithdrawable) == o["maxWithdrawable"]
assert int(r.minWithdrawable) == o["minWithdrawable"]
assert r.defaultDescription == o["defaultDescription"]

assert LnurlResponse.from_dict(json.loads(ok)).ok
e = LnurlResponse.from_dict(json.loads(err))
assert not e.ok and e.reason == json.loads(err)["reason"], e
print("lnurl", getattr(lnurl, "__version__", "?"), "accepts Satchel's answers")
