"""A session of ordinary cache traffic through redis-py with its defaults
(which speak RESP3 from the first command), over the Unix socket in
CACHE_SOCK and TCP on CACHE_PORT. Prints "ok" at the end; any error ends it."""
import os

import redis


def session(r, tag):
    assert r.ping() is True
    r.client_setname(f"py-{tag}")
    assert r.client_getname() == f"py-{tag}"
    assert r.set(f"{tag}:a", "1") is True
    assert r.get(f"{tag}:a") == b"1"
    assert r.get(f"{tag}:missing") is None
    assert r.set(f"{tag}:a", "2", nx=True) is None
    assert r.setex(f"{tag}:s", 100, "v") is True
    assert 99 <= r.ttl(f"{tag}:s") <= 100
    assert r.pexpire(f"{tag}:s", 50000) is True
    assert 49000 <= r.pttl(f"{tag}:s") <= 50000
    assert r.persist(f"{tag}:s") is True
    assert r.incr(f"{tag}:n") == 1
    assert r.incrby(f"{tag}:n", 9) == 10
    assert r.decrby(f"{tag}:n", 3) == 7
    assert r.incrbyfloat(f"{tag}:f", 1.5) == 1.5
    assert r.mset({f"{tag}:m1": "x", f"{tag}:m2": "y"}) is True
    assert r.mget([f"{tag}:m1", f"{tag}:m2", f"{tag}:nope"]) == [b"x", b"y", None]
    assert r.append(f"{tag}:m1", "yz") == 3
    assert r.strlen(f"{tag}:m1") == 3
    assert r.getrange(f"{tag}:m1", 1, -1) == b"yz"
    assert r.getdel(f"{tag}:m2") == b"y"
    assert r.exists(f"{tag}:m2") == 0
    assert r.getex(f"{tag}:m1", ex=30) == b"xyz"
    assert r.type(f"{tag}:m1") == b"string"
    assert sorted(r.keys(f"{tag}:m*")) == [f"{tag}:m1".encode()]
    assert set(r.scan_iter(match=f"{tag}:*", count=2)) == {
        f"{tag}:{k}".encode() for k in ["a", "s", "n", "f", "m1"]
    }
    assert r.rename(f"{tag}:a", f"{tag}:b") is True
    assert r.delete(f"{tag}:b", f"{tag}:nope") == 1
    p = r.pipeline()
    for i in range(100):
        p.set(f"{tag}:p{i}", i)
    p.get(f"{tag}:p42")
    assert p.execute()[-1] == b"42"
    assert r.info()["redis_version"]
    assert r.dbsize() >= 100
    try:
        r.incr(f"{tag}:m1")
        raise AssertionError("INCR of a string succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e)


unix = redis.Redis(unix_socket_path=os.environ["CACHE_SOCK"])
session(unix, "unix")
tcp = redis.Redis(port=int(os.environ["CACHE_PORT"]))
session(tcp, "tcp")
# Its default protocol is RESP3 (HELLO 3 on connecting); RESP2 on request.
assert tcp.client_info()["resp"] == "3", tcp.client_info()
resp2 = redis.Redis(port=int(os.environ["CACHE_PORT"]), protocol=2)
session(resp2, "resp2")
assert resp2.client_info()["resp"] == "2"
unix.flushdb()
print("ok")
