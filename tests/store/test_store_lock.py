"""Waiting for the store's lock, with real processes: a stopped holder is named, the wait ends.

The holder is a real process that takes the store's lock and blocks on its stdin; the test
SIGSTOPs it, as a debugger or a ^Z would, and lets it go at the end. The waiters are real pytest
runs and CLI commands with a short timeout. No mocks, and no timing asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.store.api import StoreLockTimeout
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.lock import parse_lock_timeout
from tests.helpers.fakes import make_build_tree
from tests.helpers.runs import junit, run

ROOT = Path(__file__).resolve().parents[2]
HOLDER = r"""
import sys
from pytest_ktstr_vmlinux.store.disk import ArtifactStore

with ArtifactStore(sys.argv[1]).locked():
    print("held", flush=True)
    sys.stdin.readline()
"""
# Holds the lock by flock alone, as a process that records no owner would (an older version).
BARE_HOLDER = r"""
import fcntl, os, sys

fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


class Holder:
    """A process holding the store's lock until it is told to go (or killed)."""

    def __init__(self, code: str, target: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def release(self) -> None:
        """Resume it and let it release the lock and exit."""
        if self.proc.poll() is not None:
            return
        os.kill(self.pid, signal.SIGCONT)
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)


@pytest.fixture
def store_dir() -> Path:
    """The store every run of the test uses (conftest points KTSTR_CACHE_DIR at a fresh one)."""
    return Path(os.environ["KTSTR_CACHE_DIR"])


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.proc.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()


def _stopped_holder(store_dir: Path, holders: list[Holder]) -> Holder:
    ArtifactStore(store_dir)  # made by this user, so the holder's store is this one
    holder = Holder(HOLDER, store_dir)
    holders.append(holder)
    holder.stop()
    return holder


def _notices(lines: list[str], pid: int, prog: str = "ktstr") -> list[str]:
    pattern = re.compile(
        rf"{prog}: kernel cache .*: waited \d+ s for its lock .*/lock, held by pid {pid}"
        r" \(stopped\); waiting up to 2 s in all \(--kernel-lock-timeout, KTSTR_LOCK_TIMEOUT\)"
    )
    return [line for line in lines if pattern.fullmatch(line)]


def _timeout_error(pid: int) -> str:
    """A regular expression for the error that ends the wait, named holder and remedy included."""
    return (
        rf"kernel cache \S+: lock \S+/lock still held by pid {pid} \(stopped\) after \d+ s \(the"
        rf" timeout is 2 s\); another run is building, or hung: resume it \(`kill -CONT {pid}`\)"
        rf" or end it \(`kill {pid}`\), or raise the timeout \(--kernel-lock-timeout,"
        r" KTSTR_LOCK_TIMEOUT\)"
    )


# --- a pytest run waiting for a stopped holder ---------------------------------------------------


@pytest.mark.parametrize("source", ["option", "env", "ini"])
def test_a_run_waiting_for_a_stopped_holder_names_it_and_ends(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    store_dir: Path,
    holders: list[Holder],
    source: str,
) -> None:
    # The kernel is named, so it is resolved when pytest starts: its image's identity is built
    # through the store, under the lock the stopped process holds.
    make_build_tree(pytester.path / "linux", "6.1.0-fake")
    pytester.makepyfile("def test_k(kernel):\n    pass\n")
    args = ["--kernel=linux"]
    if source == "option":
        args.append("--kernel-lock-timeout=2")
    elif source == "env":
        monkeypatch.setenv("KTSTR_LOCK_TIMEOUT", "2")
    else:
        pytester.makeini("[pytest]\nktstr_lock_timeout = 2\n")
    holder = _stopped_holder(store_dir, holders)
    result = run(pytester, *args)
    holder.release()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(_notices(result.errlines, holder.pid)) == 1, result.errlines
    errors = [line for line in result.errlines if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.errlines
    # The kernel whose resolution was waiting is named first.
    named = r"kernel 'linux' \(from (option|env|ini)\): "
    assert re.fullmatch("ERROR: ktstr: " + named + _timeout_error(holder.pid), errors[0]), errors[0]
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # Once the holder has gone, the same run goes through.
    run(pytester, *args).assert_outcomes(passed=1)


DEFAULT_KERNEL_TESTS = """
from pytest_ktstr_vmlinux import ktstr_test

@ktstr_test(symbols=["runqueues"])
def test_marked():
    pass

def test_fixture(kernel_symbols):
    pass

def test_again(kernel_symbols):
    pass
"""


@pytest.mark.real_kernel
def test_a_lock_held_too_long_fails_tests_even_on_the_default_kernel(
    pytester: pytest.Pytester, store_dir: Path, holders: list[Holder], tinyconfig_tree: Path
) -> None:
    # The running kernel (nobody named one) with a vmlinux given to it unverified: resolved at
    # start, its identity from the store; its symbol table is built when the first test needs
    # it, and that waits. A store that is stuck says nothing about the kernel: errors, never
    # skips. (The tree's files are old: a file changed moments ago would be re-verified when
    # pytest starts, under the lock.)
    pytester.makepyfile(test_default=DEFAULT_KERNEL_TESTS)
    vmlinux = tinyconfig_tree / "vmlinux"
    args = (f"--vmlinux={vmlinux}", "--no-kernel-verify", "--kernel-lock-timeout=2", "-rs")
    run(pytester, *args, "--collect-only")  # the vmlinux's identity, into the store
    holder = _stopped_holder(store_dir, holders)
    result = run(pytester, *args)
    holder.release()
    result.assert_outcomes(errors=3)
    # One wait, said once; the two later tests get the same error without waiting again.
    assert len(_notices(result.errlines, holder.pid)) == 1, result.errlines
    for name, case in junit(pytester).cases.items():
        assert case.outcome == "error", name
    failures = [line for line in result.outlines if line.startswith("ktstr: kernel cache ")]
    assert len(failures) == 3
    assert all(re.fullmatch("ktstr: " + _timeout_error(holder.pid), f) for f in failures)
    # Once the holder has gone, the same run goes through.
    run(pytester, *args).assert_outcomes(passed=3)


# --- the CLI -------------------------------------------------------------------------------------


CLI = "python -m pytest_ktstr_vmlinux"  # what the command calls itself when run so


def _cli(*args: str, timeout: str = "2") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KTSTR_LOCK_TIMEOUT=timeout)
    return subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_the_cli_waiting_for_a_stopped_holder_names_it_and_ends(
    tmp_path: Path, store_dir: Path, holders: list[Holder]
) -> None:
    tree = make_build_tree(tmp_path / "linux", "6.1.0-fake")
    holder = _stopped_holder(store_dir, holders)
    for args in (("locate", str(tree)), ("cache", "clear")):
        cli = _cli(*args)
        assert cli.returncode == 1, cli
        notice, error = cli.stderr.splitlines()
        assert _notices([notice], holder.pid, CLI) == [notice]
        # `locate` names the kernel it was resolving; `cache clear` has none.
        named = ""
        if args[0] == "locate":
            named = rf"kernel '{re.escape(str(tree))}' \(from argument\): "
        pattern = f"{CLI}: {named}{_timeout_error(holder.pid)}"
        assert re.fullmatch(pattern, error), error
    holder.release()
    assert _cli("locate", str(tree)).returncode == 0


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e999"])
def test_a_bad_timeout_is_a_clear_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    make_build_tree(pytester.path / "linux", "6.1.0-fake")
    pytester.makepyfile("def test_k(kernel):\n    pass\n")
    rule = f"not a timeout: {value!r} (seconds, a number above 0: 1800, 60, 2.5)"
    for source in ("option", "env", "ini"):
        monkeypatch.delenv("KTSTR_LOCK_TIMEOUT", raising=False)
        pytester.makeini("[pytest]\n")
        args = ["--kernel=linux"]
        if source == "option":
            args.append(f"--kernel-lock-timeout={value}")
        elif source == "env":
            monkeypatch.setenv("KTSTR_LOCK_TIMEOUT", value)
        else:
            pytester.makeini(f"[pytest]\nktstr_lock_timeout = {value}\n")
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [f"ERROR: ktstr: kernel cache lock timeout (from {source}): {rule}"]
        )
    monkeypatch.delenv("KTSTR_LOCK_TIMEOUT", raising=False)
    cli = _cli("cache", "list", timeout=value)
    assert (cli.returncode, cli.stderr) == (1, f"{CLI}: $KTSTR_LOCK_TIMEOUT: {rule}\n")


def test_timeouts_that_parse() -> None:
    assert [parse_lock_timeout(t) for t in ("1800", " 2.5 ", "0.1", "1e3")] == [
        1800.0,
        2.5,
        0.1,
        1000.0,
    ]


# --- what the owner record tells, and when it is not believed ------------------------------------


def test_the_holder_is_recorded_while_it_holds_and_only_then(store_dir: Path) -> None:
    store = ArtifactStore(store_dir)
    owner = store_dir / "lock.owner"
    with store.locked():
        record = json.loads(owner.read_text())
        assert record["pid"] == os.getpid()
        with store.locked():  # re-entrant: the inner release keeps the record
            pass
        assert owner.exists()
    assert not owner.exists()


def _wait_briefly(store_dir: Path) -> tuple[str, list[str]]:
    notices: list[str] = []
    store = ArtifactStore(store_dir, lock_timeout=0.2, on_lock_wait=notices.append)
    with pytest.raises(StoreLockTimeout) as caught, store.locked():
        pass
    assert isinstance(caught.value, KernelArtifactError)
    return str(caught.value), notices


def test_a_record_that_is_no_longer_true_names_nobody(
    store_dir: Path, holders: list[Holder]
) -> None:
    ArtifactStore(store_dir)
    killed = Holder(HOLDER, store_dir)
    killed.kill()  # SIGKILL while holding: its record stays behind
    owner = store_dir / "lock.owner"
    stale = json.loads(owner.read_text())
    assert stale["pid"] == killed.pid
    # Now a process that records nothing holds the lock: the dead holder's record must not be
    # taken for it.
    bare = Holder(BARE_HOLDER, store_dir / "lock")
    holders.append(bare)
    message, notices = _wait_briefly(store_dir)
    for said in (message, *notices):
        assert "held by another process (its pid is not known)" in said
        assert str(killed.pid) not in said
    assert "find and end the process that holds it" in message
    # A record naming the live holder but with another start time (a reused pid) names nobody.
    owner.write_text(json.dumps({**stale, "pid": bare.pid, "start": -1}))
    message, _ = _wait_briefly(store_dir)
    assert f"pid {bare.pid}" not in message
    # The true record is believed, but not once the lock file it names is replaced.
    true = {**stale, "pid": bare.pid, "start": _start_time(bare.pid)}
    owner.write_text(json.dumps(true))
    message, _ = _wait_briefly(store_dir)
    assert f"still held by pid {bare.pid} after" in message
    assert f"wait for it, or end it if it is hung (`kill {bare.pid}`)" in message
    owner.write_text(json.dumps({**true, "lock": [0, 0]}))
    message, _ = _wait_briefly(store_dir)
    assert f"pid {bare.pid}" not in message
    bare.release()


def _start_time(pid: int) -> int:
    # Field 22 of /proc/PID/stat, read here independently of the library.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[19])
