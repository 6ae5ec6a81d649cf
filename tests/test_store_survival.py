"""Enforcement outlives a damaged, replaced or missing store: real `blockd serve` processes
on loopback, the store changed under them as an unlucky operator or an attacker would.
Last, chaos: for a minute the daemons are killed (-9) and restarted at random moments while
engineers' commands write (and are killed mid-write); every answer given in that minute
must be right."""

from __future__ import annotations

import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import pytest
from daemons import Daemon, free_port, start_daemon, stop_daemon
from dnsstub import StubUpstream

from blockd.store.snapshot import read_head
from blockd.store.store import Store

BLOCKED = ["allofmp3.com", "mp3sparks.example", "clone.example"]


def run_cli(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process: this test process keeps no SQLite handle on the file
    it rewrites (closing one would drop the daemons' locks, see pitfalls)."""
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def site(tmp_path: Path, upstream: StubUpstream) -> tuple[Path, Path]:
    """(config, db): a store with one order, integrity checks every second."""
    config = tmp_path / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'rate_limit = 100000\nrate_burst = 100000\n'
        '[store]\ncheck_interval = 1.0\n[hits]\nflush_interval = 0.2\n')
    db = tmp_path / "blockd.db"
    assert run_cli(config, db, "init").returncode == 0
    r = run_cli(config, db, "order", "add", "FI-15124/2006", "--authority",
                "Copenhagen City Court", "--issued", "2006-10-25", *BLOCKED)
    assert r.returncode == 0, r.stderr
    return config, db


def snapshot_of(db: Path, instance: str = "dns") -> Path:
    return db.with_name(db.name + "-state") / f"{instance}.snapshot"


def head_of(db: Path) -> tuple[int, str]:
    store = Store.open(str(db))
    try:
        head = store.head()
        assert head is not None
        return head.seq, head.hash
    finally:
        store.close()


def wait_snapshot(db: Path, head: tuple[int, str], instance: str = "dns") -> None:
    deadline = time.monotonic() + 5
    while read_head(snapshot_of(db, instance)) != head:
        assert time.monotonic() < deadline, "the daemon wrote no snapshot of its policy"
        time.sleep(0.05)


def remove_store(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def test_store_replaced_by_a_fresh_init_is_refused(site: tuple[Path, Path]) -> None:
    """rm + init under running daemons: the blocks stay, /healthz names both heads, and
    the new store is followed only after the operator adopts it (journaled)."""
    config, db = site
    head = head_of(db)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        remove_store(db)
        r = run_cli(config, db, "init")
        assert r.returncode == 0, r.stderr
        text = d.wait_health("store refused")
        assert f"seq {head[0]} ({head[1][:16]})" in text and "seq 0" in text
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert d.metric("blockd_store_refused") == 1.0
        store = Store.open(str(db))
        try:
            store.adopt([head], reason="new store", actor="tester", at=datetime.now(UTC))
        finally:
            store.close()
        d.wait_health("ok")
        d.blocked_within("allofmp3.com", want=False, limit=2.0)  # the adopted store is empty
    finally:
        err = stop_daemon(d)
    assert "does not continue the one enforced here" in err


def test_restart_with_the_store_unreadable_serves_the_snapshot(
    site: tuple[Path, Path],
) -> None:
    """Both daemons restart while the store is garbage: they start from their snapshots,
    answer blocked names as blocked, and say they are unhealthy; without a snapshot the
    daemon refuses to start with one line."""
    config, db = site
    head = head_of(db)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    h = start_http(config, db)
    try:
        wait_snapshot(db, head)
        wait_snapshot(db, head, "http")
    finally:
        stop_daemon(d)
        stop_http(h)
    good = db.read_bytes()
    remove_store(db)
    db.write_bytes(b"\x00garbage" * 8192)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    h = start_http(config, db)
    try:
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert not d.is_blocked("ok.example")
        text = d.wait_health("snapshot")
        assert text.startswith("store unreadable")
        assert d.metric("blockd_policy_from_snapshot") == 1.0
        status, _, body = http_get(h, "www.allofmp3.com")
        assert status == 451 and "FI-15124/2006" in body
        db.write_bytes(good)  # the store comes back: followed again
        d.wait_health("ok")
        assert all(d.is_blocked(n) for n in BLOCKED)
    finally:
        stop_daemon(d)
        stop_http(h)
    for instance in ("dns", "http"):
        snapshot_of(db, instance).unlink()
    db.write_bytes(b"\x00garbage" * 8192)
    r = subprocess.run([sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       env={**os.environ, "BLOCKD_CONFIG": str(config)}, timeout=30,
                       check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no snapshot of the last good policy" in r.stderr


def test_pages_corrupted_in_place_are_seen_within_a_check_interval(
    site: tuple[Path, Path],
) -> None:
    """Garbage in pages 2-10 with the header intact: the daemon's cached reads still work,
    its integrity check does not; it goes on enforcing and says the store is damaged."""
    config, db = site
    names = db.with_name("names.txt")
    names.write_text("".join(f"n{i}.example\n" for i in range(3000)))
    r = run_cli(config, db, "import", str(names), "--format", "list", "--order",
                "FI-15124/2006")
    assert r.returncode == 0, r.stderr
    assert run_cli(config, db, "init").returncode == 0  # (checkpoints the WAL)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        d.wait_health("ok")
        with db.open("r+b") as fh:
            fh.seek(4096)
            fh.write(bytes(range(256)) * (9 * 4096 // 256))
        started = time.monotonic()
        text = d.wait_health("store damaged", limit=5.0)
        assert time.monotonic() - started < 3.0, text  # one interval (1 s) and the check
        assert d.metric("blockd_store_damaged") == 1.0
        assert d.is_blocked("allofmp3.com") and d.is_blocked("n7.example")
    finally:
        stop_daemon(d)


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_restored_under_running_daemons(site: tuple[Path, Path]) -> None:
    """`blockd store restore` while a daemon runs and the live store has WAL frames the
    backup does not: the backup file is intact afterwards, the journal records the
    adoption, and the daemon enforces the backup's content within 2 s."""
    config, db = site
    backup = db.with_name("backup.db")
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        r = run_cli(config, db, "store", "backup", str(backup))
        assert r.returncode == 0, r.stderr
        before = sha256(backup)
        r = run_cli(config, db, "order", "add", "LATER-1", "--authority", "Court",
                    "--issued", "2024-01-01", "later.example")
        assert r.returncode == 0, r.stderr
        d.blocked_within("later.example", want=True, limit=2.0)
        wait_snapshot(db, head_of(db))  # the daemon stands on the newer head
        assert Path(str(db) + "-wal").exists()  # the live store has a WAL beside it
        r = run_cli(config, db, "store", "restore", str(backup), "--yes")
        assert r.returncode == 0, r.stderr
        d.blocked_within("later.example", want=False, limit=2.0)
        assert all(d.is_blocked(n) for n in BLOCKED)
        d.wait_health("ok", limit=2.0)
        assert sha256(backup) == before
        r = run_cli(config, db, "audit", "verify")
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli(config, db, "audit", "log")
        assert "store.adopt" in r.stdout, r.stdout
    finally:
        stop_daemon(d)


def test_store_deleted_and_restored(site: tuple[Path, Path]) -> None:
    """The store is deleted under a running daemon: it keeps enforcing, unhealthy; a
    restore of the latest backup brings it back to healthy within 2 s."""
    config, db = site
    backup = db.with_name("backup.db")
    assert run_cli(config, db, "store", "backup", str(backup)).returncode == 0
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        d.wait_health("ok")
        remove_store(db)
        d.wait_health("store unreadable")
        assert all(d.is_blocked(n) for n in BLOCKED)
        r = run_cli(config, db, "store", "restore", str(backup), "--yes")
        assert r.returncode == 0, r.stderr
        started = time.monotonic()
        d.wait_health("ok", limit=2.0)
        assert time.monotonic() - started < 2.0
        assert all(d.is_blocked(n) for n in BLOCKED)
    finally:
        stop_daemon(d)


# -- chaos --------------------------------------------------------------------------

SECONDS = 60.0
SETTLE = 2.0  # a change is enforced within this long (the follower polls every 0.2 s)
STEADY = ["allofmp3.com", "mp3sparks.example", "clone.example"]  # the site's order


@dataclass
class Book:
    """What the writers did, as far as they know: (when it returned, names)."""

    added: list[tuple[float, str, list[str]]] = field(default_factory=list)
    lifted: dict[str, float] = field(default_factory=dict)  # reference -> when
    unknown: set[str] = field(default_factory=set)  # killed mid-command: either way
    lifting: set[str] = field(default_factory=set)  # references being lifted right now
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)

    def expect(self, name: str, now: float) -> bool | None:
        """Should ``name`` be blocked now (None: no claim, it is settling or unknown)?"""
        if name in STEADY:
            return True
        with self.lock:
            if name in self.unknown:
                return None
            for when, ref, names in self.added:
                if name in names:
                    if ref in self.lifting:
                        return None
                    if ref in self.lifted:
                        return False if now - self.lifted[ref] > SETTLE else None
                    return True if now - when > SETTLE else None
        return None


def writer(config: Path, db: Path, book: Book, stop: threading.Event, rnd: random.Random
           ) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        ref = f"CHAOS-{n}"
        names = [f"c{n}-{i}.example" for i in range(rnd.choice((3, 300)))]
        env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "chaos"}
        lift = None
        with book.lock:
            live = [r for _, r, _ in book.added if r not in book.lifted]
        if live and rnd.random() < 0.3:
            lift = rnd.choice(live)
            with book.lock:
                book.lifting.add(lift)
            args = ["order", "lift", lift, "--reason", "appeal allowed"]
        else:
            args = ["order", "add", ref, "--authority", "Chaos Court", "--issued",
                    "2026-01-01", *names]
        proc = subprocess.Popen([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        killed = False
        if rnd.random() < 0.25:
            time.sleep(rnd.uniform(0.0, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = True
        _, err = proc.communicate(timeout=60)
        done = time.monotonic()
        with book.lock:
            book.lifting.discard(lift or "")
            if killed:
                book.unknown.update(names if lift is None else
                                    next(x for _, r, x in book.added if r == lift))
                if lift is not None:  # maybe lifted: never lifted again (its names are
                    book.lifted[lift] = done  # unknown, so no answer is judged for them)
            elif proc.returncode != 0:
                book.errors.append(f"{args[:2]}: {err.strip()}")
            elif lift is None:
                book.added.append((done, ref, names))
            else:
                book.lifted[lift] = done


def test_kill_and_restart_daemons_while_writing(site: tuple[Path, Path]) -> None:
    config, db = site
    port = free_port()
    rnd = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    book = Book()
    stop = threading.Event()
    dns_d: list[Daemon] = [start_daemon(db, config, "--listen", f"127.0.0.1:{port}")]
    web: list[subprocess.Popen[str]] = [start_http(config, db)]
    web_port = web[0].port  # type: ignore[attr-defined]
    restarts = {"dns": 0, "http": 0}
    failures: list[str] = []

    def killer() -> None:
        while not stop.is_set():
            time.sleep(rnd.uniform(0.5, 3.0))
            which = rnd.choice(("dns", "http"))
            try:
                if which == "dns":
                    old = dns_d[0]
                    assert old.proc is not None
                    kill(old.proc)
                    time.sleep(rnd.uniform(0.0, 0.3))
                    dns_d[0] = start_daemon(db, config, "--listen", f"127.0.0.1:{port}")
                else:
                    kill(web[0])
                    web[0] = start_http(config, db, port=web_port)
                restarts[which] += 1
            except Exception as exc:  # a daemon that does not come back is the failure
                failures.append(f"{which} restart: {exc}")
                return

    threads = [threading.Thread(target=writer, args=(config, db, book, stop, rnd)),
               threading.Thread(target=killer)]
    for t in threads:
        t.start()
    answers = timeouts = wrong = 0
    http_answers = 0
    checker = random.Random(11)
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline and not failures:
            with book.lock:
                pool = [*STEADY, *(n for _, _, names in book.added[-30:] for n in names[:5])]
            name = checker.choice(pool)
            asked = time.monotonic()
            try:
                got = dns_d[0].is_blocked(name, timeout=0.3)
            except (dns.exception.Timeout, OSError):
                timeouts += 1
                continue
            answers += 1
            want = book.expect(name, asked)
            if want is not None and got != want:
                wrong += 1
                failures.append(f"{name}: answered {'blocked' if got else 'not blocked'}")
            if checker.random() < 0.2:
                try:
                    status = http_status(web_port, "www." + STEADY[0])
                except OSError:
                    continue
                http_answers += 1
                if status != 451:
                    failures.append(f"notice server answered {status} for a blocked host")
    finally:
        stop.set()
        for t in threads:
            t.join(120)
        stop_daemon(dns_d[0])
        stop_http(web[0])
    assert not failures, failures[:5]
    assert not book.errors, book.errors[:5]
    assert restarts["dns"] >= 5 and restarts["http"] >= 5, restarts
    assert answers > 200 and http_answers > 20, (answers, timeouts, http_answers)
    assert len(book.added) >= 10 and book.lifted, (len(book.added), len(book.lifted))
    r = run_cli(config, db, "audit", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"chaos: {answers} DNS answers ({timeouts} timeouts while down), {http_answers} "
          f"notice pages, restarts {restarts}, {len(book.added)} orders added, "
          f"{len(book.lifted)} lifted, {len(book.unknown)} names in killed commands")


def kill(proc: subprocess.Popen[str]) -> None:
    """kill -9, and close what the test held of the process (pipes, its log file)."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    log = getattr(proc, "log", None)
    if log is not None:
        log.close()


def http_status(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()



# -- the notice server as a process ------------------------------------------------


def start_http(config: Path, db: Path, port: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(db), "--listen",
         f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "http://" in line, line
    proc.port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])  # type: ignore[attr-defined]
    return proc


def stop_http(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def http_get(proc: subprocess.Popen[str], host: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)  # type: ignore[attr-defined]
    try:
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()
