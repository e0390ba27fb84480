"""An integrating party written with jwcrypto, an implementation of JOSE independent of
pgcloak's (josekit/OpenSSL): it ingests records through the sidecar in both JWE
serializations, fetches them back with its own bearer tokens and decrypts the answers.

Usage: jwcrypto_party.py SIDECAR_URL KEY_DIR [CA_FILE]
KEY_DIR holds sidecar.pub.pem (the sidecar's key) and partner-a.pem (the party's RSA key).
With CA_FILE, an https:// SIDECAR_URL is verified against that CA (host name included).
Prints one JSON line {"ids": [...], "records": [...]} and then "jwcrypto OK". A third
record is sent as partner-d (partner-a's key, `require_jti`), once and then as a replay.
"""

import json
import ssl
import sys
import time
import urllib.error
import urllib.request

from jwcrypto import jwe, jwk, jws, jwt
from jwcrypto.common import json_encode

PARTY = "partner-a"
TLS = None  # an ssl.SSLContext trusting CA_FILE, when given


def load(path):
    with open(path, "rb") as f:
        return jwk.JWK.from_pem(f.read())


def sign(record, key, alg, kid=PARTY):
    token = jws.JWS(json.dumps(record).encode())
    token.add_signature(key, alg=alg, protected=json_encode({"alg": alg, "kid": kid}))
    return token.serialize(compact=True)


def encrypt(plaintext, to, alg, enc, compact):
    token = jwe.JWE(plaintext.encode(), protected=json_encode({"alg": alg, "enc": enc, "cty": "JWT"}))
    token.add_recipient(to)
    return token.serialize(compact=compact)


def request(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=TLS) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def bearer(key, exp_in=120, kid=PARTY):
    token = jwt.JWT(header={"alg": "RS256", "kid": kid},
                    claims={"sub": PARTY, "iat": int(time.time()), "exp": int(time.time()) + exp_in})
    token.make_signed_token(key)
    return "Bearer " + token.serialize()


def main():
    global TLS
    base, keys = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    if len(sys.argv) > 3:
        TLS = ssl.create_default_context(cafile=sys.argv[3])
    server = load(keys + "/sidecar.pub.pem")
    party = load(keys + "/partner-a.pem")
    records = [
        {"email": "jw1@example.com", "first_name": "Jo", "last_name": "Wu", "age": 33},
        {"email": "jw2@example.com", "first_name": "Ída", "last_name": "Ng", "age": None},
    ]
    bodies = [
        ("application/jose", encrypt(sign(records[0], party, "PS256"), server, "RSA-OAEP-256", "A256GCM", True)),
        ("application/jose+json", encrypt(sign(records[1], party, "RS256"), server, "RSA-OAEP", "A128CBC-HS256", False)),
    ]
    ids = []
    for content_type, body in bodies:
        status, _, text = request(base + "/v1/ingest/users", "POST", body.encode(), {"Content-Type": content_type})
        assert status == 201, (content_type, status, text)
        ids.append(json.loads(text)["id"])

    for record_id, record in zip(ids, records):
        status, content_type, text = request(f"{base}/v1/records/users/{record_id}",
                                             headers={"Authorization": bearer(party)})
        assert status == 200 and content_type == "application/jose", (status, content_type, text)
        answer = jwe.JWE()
        answer.deserialize(text, key=party)
        row = json.loads(answer.payload)
        assert row == dict(record, id=record_id), (row, record)

    # A record as a JWT with registered claims (jwcrypto's own), from partner-d, which must
    # send `jti` and `exp`: stored once, refused as a replay the second time.
    now = int(time.time())
    single = jwt.JWT(header={"alg": "RS256", "kid": "partner-d"},
                     claims={"email": "jw3@example.com", "jti": f"jw-{now}", "iat": now, "exp": now + 120})
    single.make_signed_token(party)
    body = encrypt(single.serialize(), server, "RSA-OAEP-256", "A256GCM", True).encode()
    answers = [request(base + "/v1/ingest/users", "POST", body, {"Content-Type": "application/jose"}) for _ in range(2)]
    assert answers[0][0] == 201, answers[0]
    assert answers[1][0] == 409 and "jti" in json.loads(answers[1][2])["error"], answers[1]

    # Refusals an independent client must get too.
    intruder = jwk.JWK.generate(kty="RSA", size=2048)
    forged = encrypt(sign(records[0], intruder, "RS256"), server, "RSA-OAEP-256", "A256GCM", True)
    status, _, text = request(base + "/v1/ingest/users", "POST", forged.encode(), {"Content-Type": "application/jose"})
    assert status == 401 and "error" in json.loads(text), (status, text)
    status, _, text = request(f"{base}/v1/records/users/{ids[0]}", headers={"Authorization": bearer(party, exp_in=-120)})
    assert status == 401 and "expired" in json.loads(text)["error"], (status, text)
    status, _, text = request(f"{base}/v1/records/users/{ids[0]}", headers={"Authorization": bearer(intruder)})
    assert status == 401, (status, text)

    print(json.dumps({"ids": ids, "records": records}))
    print("jwcrypto OK")


if __name__ == "__main__":
    main()
