"""A real JSON-gateway client (etcd3gw, from PyPI) through keygate: put/get/delete, watch,
lease, lock. Usage: etcd3gw_scenario.py HOST PORT. Prints OK and exits 0 when every step
behaved as etcd does; raises otherwise."""

import sys
import threading

from etcd3gw.client import Etcd3Client


def main(host, port):
    c = Etcd3Client(host=host, port=int(port), timeout=10)
    prefix = "/etcd3gw-scenario/"

    assert c.put(prefix + "a", "1") is True
    assert c.get(prefix + "a") == [b"1"], c.get(prefix + "a")
    c.put(prefix + "b", "2")
    got = sorted(v for v, _ in c.get_prefix(prefix))
    assert got == [b"1", b"2"], got
    assert c.delete(prefix + "b") is True
    assert c.get(prefix + "b") == []

    # Watch: a put made after the watch starts arrives as an event.
    events = []
    ready = threading.Event()

    def watcher():
        it, cancel = c.watch(prefix + "w")
        ready.set()
        for ev in it:
            events.append(ev)
            break
        cancel()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    ready.wait(5)
    # etcd3gw opens the stream lazily; give the create a moment before writing.
    t.join(0.5)
    c.put(prefix + "w", "watched")
    t.join(10)
    assert events, "no watch event arrived"
    assert events[0]["kv"]["value"] == b"watched", events

    # Lease: grant, attach a key, refresh, list keys, revoke (the key goes with it).
    lease = c.lease(ttl=30)
    c.put(prefix + "leased", "x", lease=lease)
    assert lease.refresh() > 0
    assert [k for k in lease.keys()] == [(prefix + "leased").encode()], lease.keys()
    assert lease.revoke() is True
    assert c.get(prefix + "leased") == []

    # Lock: acquire, a second holder cannot, release.
    lock = c.lock("scenario-lock", ttl=30)
    assert lock.acquire() is True
    other = c.lock("scenario-lock", ttl=30)
    assert other.acquire() is False
    assert lock.release() is True
    assert other.acquire() is True
    other.release()

    c.delete_prefix(prefix)
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
