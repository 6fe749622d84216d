"""Validates Satchel's LNURL-pay and Lightning Address answers with the LNbits team's `lnurl`
package (PyPI), and completes a pay request against the running server.

argv: local base URL, public_url, LNURL, expected URL, Lightning Address, payRequest JSON,
well-known JSON, LUD error JSON. Prints the invoice it obtained (last line: `pr=<bolt11>`) for
the Rust test to pay. Exits non-zero on any mismatch.
"""
import asyncio
import json
import sys

import lnurl
from lnurl import LnurlResponse
from lnurl.core import execute_pay_request
from lnurl.types import LnAddress
from bolt11 import decode as bolt11_decode

base, public, code, url, address, pay_req, well_known, err = sys.argv[1:9]

decoded = str(lnurl.decode(code))
assert decoded == url, (decoded, url)
assert str(lnurl.encode(url).bech32).upper() == code.upper(), lnurl.encode(url)

# The address resolves to our well-known URL (LUD-16).
user, host = address.split("@")
assert str(LnAddress(address).url) == f"{public}/.well-known/lnurlp/{user}", LnAddress(address).url

o = json.loads(pay_req)
r = LnurlResponse.from_dict(o)
assert type(r).__name__ == "LnurlPayResponse", type(r)
assert str(r.callback) == o["callback"], (r.callback, o["callback"])
assert int(r.minSendable) == o["minSendable"] and int(r.maxSendable) == o["maxSendable"]
assert r.commentAllowed == o["commentAllowed"]
entries = dict(r.metadata.list()) if callable(getattr(r.metadata, "list", None)) else dict(json.loads(o["metadata"]))
assert entries.get("text/identifier") == address, entries
assert "text/plain" in entries, entries

w = LnurlResponse.from_dict(json.loads(well_known))
assert type(w).__name__ == "LnurlPayResponse", type(w)
assert str(w.metadata) == str(r.metadata) and str(w.callback) == str(r.callback)

e = LnurlResponse.from_dict(json.loads(err))
assert not e.ok and e.reason == json.loads(err)["reason"], e

# Complete a pay request against the running server: the library checks the range, the
# comment length and the invoice amount; we check the description hash (LUD-06).
local = dict(o, callback=o["callback"].replace(public, base))
res = LnurlResponse.from_dict(local)
action = asyncio.run(execute_pay_request(res, 21000, "from python"))
inv = bolt11_decode(str(action.pr))
assert inv.amount_msat == 21000, inv.amount_msat
assert inv.description_hash == r.metadata.h, (inv.description_hash, r.metadata.h)
assert action.verify is not None and str(action.verify).startswith(public + "/v1/lnurlp/verify/"), action.verify
print("lnurl", getattr(lnurl, "__version__", "?"), "accepts Satchel's LNURL-pay answers")
print(f"pr={action.pr}")
