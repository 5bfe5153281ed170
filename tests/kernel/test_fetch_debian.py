"""Kernels on demand, for real: ``--kernel debian:...`` fetched from the Debian archive with apt,
unpacked into the store, paired by build-id, reused offline, fetched once however many processes
ask, and a fetch killed halfway leaving the store as it was.

apt goes through ArchiveProxy (tests/helpers/archiveproxy.py), a real HTTP proxy that counts what
is asked for and keeps each package on disk under the test kernels cache, so a package crosses
the network once per machine. ``debian:bookworm`` and ``debian:sid`` are fetched once into a store
under the test kernels cache too, which later sessions only check for moved suites.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.kernel.fetch.fetch import FetchedKernel, fetch_kernel
from pytest_ktstr_vmlinux.kernel.fetch.specs import parse_fetch_spec
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.trees import TREE_NAME_RE
from tests.helpers.archiveproxy import ArchiveProxy, refusing_proxy
from tests.helpers.kernels import KERNELS_DIR, REQUIRE_REAL_KERNELS
from tests.helpers.runs import junit, kernel_summary, run

pytestmark = pytest.mark.real_kernel

DEB_CACHE = KERNELS_DIR / "deb-cache"
FETCH_STORE = KERNELS_DIR / "fetch-store"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOOLS = ("apt-get", "apt-cache", "dpkg-deb", "/usr/lib/apt/apt-helper")
USAGE_ERROR = 4
KERNELS = ("--kernel=old=debian:bookworm", "--kernel=new=debian:sid")

IDENTIFY = """
import json, os, subprocess

def test_identify(kernel, vmlinux_path, kernel_config):
    notes = subprocess.run(["readelf", "-n", str(vmlinux_path)], capture_output=True,
                           text=True, check=True).stdout
    with open(os.environ["REPORT"], "w") as f:
        json.dump({
            "release": kernel.release, "build_id": kernel.build_id, "paired": kernel.paired,
            "readelf_build_id": notes.split("Build ID: ", 1)[1].split()[0],
            "vmlinux": str(vmlinux_path), "sysroot": str(kernel.sysroot),
            "label": kernel.label, "config": kernel_config.source,
        }, f)
"""

USES_VMLINUX = """
def test_symbols(kernel_symbols):
    assert kernel_symbols["runqueues"]

def test_vmlinux(vmlinux_path, kernel):
    assert vmlinux_path == kernel.vmlinux
"""


PINNED = """
import os

def test_the_workers_use_the_controllers_kernels(kernel):
    assert os.environ["PYTEST_XDIST_WORKER"]
    assert kernel.fetched.status == "pinned", kernel.fetched
"""


def _require_apt() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.access(t, os.X_OK)]
    if missing:
        message = f"fetching Debian kernels needs {', '.join(missing)}: a Debian or Ubuntu host"
        if REQUIRE_REAL_KERNELS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def archive() -> Iterator[ArchiveProxy]:
    _require_apt()
    with ArchiveProxy(DEB_CACHE) as proxy:
        yield proxy


@pytest.fixture
def proxied(archive: ArchiveProxy, monkeypatch: pytest.MonkeyPatch) -> ArchiveProxy:
    monkeypatch.setenv("http_proxy", archive.url)
    return archive


@pytest.fixture(scope="session")
def fetched(archive: ArchiveProxy) -> dict[str, FetchedKernel]:
    """debian:bookworm and debian:sid in the shared store. This process keeps using them (its
    store pins them) for the whole session, as a run does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("http_proxy", archive.url)
        store = ArtifactStore(FETCH_STORE)
        kernels = {
            text: fetch_kernel(parse_fetch_spec(text, text), text, store)
            for text in ("debian:bookworm", "debian:sid")
        }
    _KEEP.append(store)
    return kernels


_KEEP: list[ArtifactStore] = []


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[Path]:
    """An empty store, removed afterwards (a fetched kernel is half a GB)."""
    path = tmp_path / "store"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _trees(store: Path) -> list[str]:
    trees = store / "trees"
    return sorted(p.name for p in trees.iterdir() if TREE_NAME_RE.fullmatch(p.name))


# --- one kernel, resolved and paired -----------------------------------------------------------


def test_debian_bookworm_resolves_and_pairs_by_build_id(
    pytester: pytest.Pytester,
    proxied: ArchiveProxy,
    fetched: dict[str, FetchedKernel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = pytester.path / "report.json"
    monkeypatch.setenv("REPORT", str(report))
    pytester.makepyfile(test_identify=IDENTIFY)
    result = run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={FETCH_STORE}")
    result.assert_outcomes(passed=1)
    got = json.loads(report.read_text())
    bookworm = fetched["debian:bookworm"]
    # The release in the image's own header is the one apt's metapackage named.
    assert got["release"] == bookworm.release
    assert got["release"].endswith("-cloud-amd64")
    assert got["paired"] == "build-id"
    assert got["build_id"] == got["readelf_build_id"]  # readelf: an oracle of its own
    assert got["sysroot"] == str(bookworm.sysroot)
    assert Path(got["vmlinux"]).is_relative_to(FETCH_STORE / "trees" / bookworm.tree)
    assert got["config"] == str(bookworm.sysroot / f"boot/config-{bookworm.release}")
    assert got["label"] == f"bookworm-{bookworm.version}"
    result.stdout.fnmatch_lines(
        [
            f"ktstr: kernel=debian:bookworm (from option) image=*/boot/vmlinuz-{bookworm.release}"
            f" * paired=build-id suite=bookworm package_version={bookworm.version}",
            f"ktstr: fetched debian:bookworm/cloud-amd64: {bookworm.release} {bookworm.version}"
            " (bookworm), * MB: cached; bookworm *",
        ]
    )
    case = junit(pytester).cases["test_identify.py::test_identify"]
    assert case.properties["ktstr_suite"] == "bookworm"
    assert case.properties["ktstr_package_version"] == bookworm.version
    (suite_kernel,) = junit(pytester).kernels()
    assert suite_kernel["fetched"]["packages"] == list(bookworm.packages)
    assert f"linux-image-{bookworm.release}-dbg" in bookworm.packages


# --- fetched once, however many processes ask --------------------------------------------------


def test_two_runs_with_xdist_fetch_each_package_once(
    pytester: pytest.Pytester,
    proxied: ArchiveProxy,
    fetched: dict[str, FetchedKernel],
    fresh_store: Path,
) -> None:
    """A run over two debian: kernels with -n 2, and a second run started alongside asking for
    one of them, on one empty store: every package crosses the proxy once. The controller
    fetches and hands its workers the trees; the other run waits on the store's lock."""
    pytester.makepyfile(test_uses=USES_VMLINUX, test_pinned=PINNED)
    mark = proxied.mark()
    args = ["-p", "no:cacheprovider", f"--kernel-cache-dir={fresh_store}"]
    both = pytester.popen(
        [sys.executable, "-m", "pytest", *args, "-n", "2", "--junitxml=both.xml", *KERNELS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    alone = pytester.popen(
        [sys.executable, "-m", "pytest", *args, "test_uses.py", "--kernel=debian:sid"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    both_out = both.communicate(timeout=1800)[0].decode()
    alone_out = alone.communicate(timeout=1800)[0].decode()
    assert both.returncode == 0, both_out
    assert alone.returncode == 0, alone_out
    packages = {
        f"{name}_{kernel.version}_amd64.deb".replace(":", "%3a")
        for kernel in fetched.values()
        for name in kernel.packages
    }
    downloads = proxied.debs(since=mark)
    assert set(downloads) == packages
    assert set(downloads.values()) == {1}, downloads
    assert len(_trees(fresh_store)) == 2
    assert list((fresh_store / "trees" / "staging").iterdir()) == []
    outcomes = junit(pytester, "both.xml").outcomes()
    assert outcomes == {
        f"test_{module}.py::test_{name}[{label}]": "passed"
        for module, names in (
            ("uses", ("symbols", "vmlinux")),
            ("pinned", ("the_workers_use_the_controllers_kernels",)),
        )
        for name in names
        for label in ("old", "new")
    }
    # One of the runs downloaded sid; the other waited for it, then took what it published.
    sid = "ktstr: fetched debian:sid/cloud-amd64: * MB: "
    out = both_out + alone_out
    assert (
        len(fnmatch.filter(out.splitlines(), f"{sid}downloaded * MB in * s, unpacked by * s")) == 1
    )
    assert (
        len(fnmatch.filter(out.splitlines(), f"{sid}fetched a moment ago by another process")) == 1
    )


# --- offline, and an archive that cannot be reached --------------------------------------------


def _asked_long_ago(name: str) -> None:
    """Make the store's last question about a suite old, as on the next day."""
    trees = ArtifactStore(FETCH_STORE).trees
    ref = trees.read_ref(name)
    assert ref is not None
    trees.write_ref(name, ref["tree"], {**ref["data"], "checked_ns": 0})


def test_asked_recently_is_not_asked_again(
    pytester: pytest.Pytester,
    fetched: dict[str, FetchedKernel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    _asked_long_ago("debian:bookworm/cloud-amd64")
    with ArchiveProxy(DEB_CACHE) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        first = run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={FETCH_STORE}")
        first.assert_outcomes(passed=2)
        asked = len(proxy.requests)
        assert asked == 3  # one InRelease per suite: bookworm, -updates, -security
        first.stdout.fnmatch_lines(["ktstr: fetched debian:bookworm/cloud-amd64: * has not moved"])
        again = run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={FETCH_STORE}")
        again.assert_outcomes(passed=2)
        assert len(proxy.requests) == asked
        again.stdout.fnmatch_lines(
            ["ktstr: fetched debian:bookworm/cloud-amd64: * was asked * s ago"]
        )


def test_offline_uses_the_cache_and_asks_nobody(
    pytester: pytest.Pytester,
    fetched: dict[str, FetchedKernel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    sid = fetched["debian:sid"]
    with refusing_proxy(tmp_path) as closed:
        monkeypatch.setenv("http_proxy", closed.url)
        result = run(
            pytester, "--kernel-offline", "--kernel=debian:sid", f"--kernel-cache-dir={FETCH_STORE}"
        )
        result.assert_outcomes(passed=2)
        assert closed.requests == []  # not even a question
        offline = f"ktstr: fetched debian:sid/cloud-amd64: {sid.release} * not checked (offline)"
        result.stdout.fnmatch_lines([offline])
        monkeypatch.setenv("KTSTR_KERNEL_OFFLINE", "1")
        run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={FETCH_STORE}").assert_outcomes(
            passed=2
        )
        assert closed.requests == []
        monkeypatch.delenv("KTSTR_KERNEL_OFFLINE")

        # Online, with the archive unreachable: the run asks, hears nothing, and goes on.
        _asked_long_ago("debian:sid/cloud-amd64")
        result = run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={FETCH_STORE}")
        result.assert_outcomes(passed=2)
        assert any("/dists/sid/InRelease" in r for r in closed.requests)
        assert not any(r.endswith(".deb") for r in closed.requests)
        result.stdout.fnmatch_lines(
            ["ktstr: fetched debian:sid/cloud-amd64: * could not ask the archive whether it moved*"]
        )


def test_offline_without_the_kernel_is_a_usage_error(
    pytester: pytest.Pytester, fresh_store: Path
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    result = run(
        pytester, "--kernel-offline", "--kernel=debian:sid", f"--kernel-cache-dir={fresh_store}"
    )
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: ktstr: kernel 'debian:sid' is not in the kernel cache, and offline it cannot be"
            " fetched: run once online to fetch it"
        ]
    )


def test_a_moved_suite_is_asked_again_and_an_unchanged_kernel_not_downloaded(
    pytester: pytest.Pytester, proxied: ArchiveProxy, fetched: dict[str, FetchedKernel]
) -> None:
    # What the store recorded of sid's InRelease no longer matches: as after the archive moved.
    store = ArtifactStore(FETCH_STORE)
    name = "debian:sid/cloud-amd64"
    ref = store.trees.read_ref(name)
    assert ref is not None
    ref["data"]["state"]["verified"] = {k: "0" * 64 for k in ref["data"]["state"]["verified"]}
    ref["data"]["checked_ns"] = 0
    store.trees.write_ref(name, ref["tree"], ref["data"])
    pytester.makepyfile(USES_VMLINUX)
    mark = proxied.mark()
    result = run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={FETCH_STORE}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["ktstr: fetched debian:sid/cloud-amd64: * cached; sid moved, its kernel did not"]
    )
    assert proxied.debs(since=mark) == {}
    fresh = store.trees.read_ref(name)
    assert fresh is not None
    assert "0" * 64 not in fresh["data"]["state"]["verified"].values()


# --- what does not exist is a usage error that lists what does ---------------------------------


@pytest.mark.parametrize(
    ("spec", "lines"),
    [
        (
            "debian:nosuch",
            [
                "ERROR: ktstr: kernel 'debian:nosuch': the Debian archive has no suite 'nosuch';"
                " its suites: *bookworm (oldstable)*sid (unstable)*",
            ],
        ),
        (
            "debian:sid/nosuch-amd64",
            [
                "ERROR: ktstr: kernel 'debian:sid/nosuch-amd64': sid has no flavour"
                " 'nosuch-amd64' for amd64 (no linux-image-nosuch-amd64); its flavours for"
                " amd64: amd64, cloud-amd64, rt-amd64*",
            ],
        ),
        (
            "debian:sid/nosuch",
            ["ERROR: ktstr: kernel 'debian:sid/nosuch': flavour 'nosuch' builds for no Debian*"],
        ),
        (
            "debian:6.1.0-999-cloud-amd64",
            [
                "ERROR: ktstr: kernel 'debian:6.1.0-999-cloud-amd64': no Debian suite has"
                " linux-image-6.1.0-999-cloud-amd64 (searched *bookworm*sid*); cloud-amd64"
                " kernels there now: *bookworm 6.1.0-*-cloud-amd64*",
            ],
        ),
    ],
)
def test_what_does_not_exist_is_a_usage_error_listing_what_does(
    pytester: pytest.Pytester,
    proxied: ArchiveProxy,
    fetched: dict[str, FetchedKernel],
    spec: str,
    lines: list[str],
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    mark = proxied.mark()
    result = run(pytester, f"--kernel={spec}", f"--kernel-cache-dir={FETCH_STORE}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(lines)
    assert proxied.debs(since=mark) == {}


def test_a_host_without_apt_is_told_what_is_needed(
    pytester: pytest.Pytester,
    fetched: dict[str, FetchedKernel],
    fresh_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a host with neither apt nor dpkg
    result = run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={fresh_store}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: ktstr: kernel 'debian:sid': fetching a Debian kernel needs apt-get, apt-cache,"
            " dpkg-deb, which this host does not have*"
        ]
    )
    # What the store already has needs none of them offline.
    run(
        pytester, "--kernel-offline", "--kernel=debian:sid", f"--kernel-cache-dir={FETCH_STORE}"
    ).assert_outcomes(passed=2)


def test_a_download_that_fails_says_so_and_keeps_nothing(
    pytester: pytest.Pytester,
    fetched: dict[str, FetchedKernel],
    fresh_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    with ArchiveProxy(DEB_CACHE, refuse_debs=True) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        result = run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={fresh_store}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: ktstr: kernel 'debian:bookworm': the Debian archive could not be reached"
            " (*503*); nothing was kept: check the network (or apt's proxy settings) and run again"
        ]
    )
    assert _trees(fresh_store) == []
    assert list((fresh_store / "trees" / "staging").iterdir()) == []
    assert list((fresh_store / "trees" / "refs").iterdir()) == []


def test_a_store_restored_from_an_archive_is_reused_offline(
    pytester: pytest.Pytester,
    proxied: ArchiveProxy,
    fetched: dict[str, FetchedKernel],
    fresh_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a CI cache restores it (docs/ci.md): every file of the fetched kernel's tree comes
    back with a new inode and ctime, its bytes unchanged; the tree is checked by content and
    published again, not refused, and nothing is fetched."""
    pytester.makepyfile(USES_VMLINUX)
    run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={fresh_store}").assert_outcomes(
        passed=2
    )
    (published,) = _trees(fresh_store)
    restored = tmp_path / "restored"
    archive = tmp_path / "store.tar"
    subprocess.run(["tar", "-C", str(fresh_store), "-cf", str(archive), "."], check=True)
    shutil.rmtree(fresh_store)  # the runner that made it is gone
    restored.mkdir(mode=0o700)
    subprocess.run(["tar", "-C", str(restored), "-xf", str(archive)], check=True)
    archive.unlink()
    with refusing_proxy(tmp_path) as closed:
        monkeypatch.setenv("http_proxy", closed.url)
        for _ in range(2):  # resealed once, then opened as any tree
            result = run(
                pytester,
                "--kernel-offline",
                "--kernel=debian:bookworm",
                f"--kernel-cache-dir={restored}",
            )
            result.assert_outcomes(passed=2)
            assert "damaged" not in result.stdout.str() + result.stderr.str()
        assert closed.requests == []
    assert _trees(restored) == [published]
    # A restored tree whose bytes changed is not resealed: offline it is a usage error.
    root = restored / "trees" / published / "root"
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    vmlinux = max(files, key=lambda p: p.stat().st_size)  # the debug vmlinux
    vmlinux.chmod(0o644)
    size = vmlinux.stat().st_size
    with open(vmlinux, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 8)
    result = run(
        pytester, "--kernel-offline", "--kernel=debian:bookworm", f"--kernel-cache-dir={restored}"
    )
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(["*changed since it was published*offline it cannot be fetched*"])
    shutil.rmtree(restored, ignore_errors=True)


# --- a fetch killed halfway --------------------------------------------------------------------


def _processes_in(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == directory or directory in cwd.parents:
                found.append(int(entry.name))
    return found


def test_a_fetch_killed_mid_download_leaves_the_store_consistent(
    pytester: pytest.Pytester,
    fetched: dict[str, FetchedKernel],
    fresh_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bookworm = fetched["debian:bookworm"]
    pytester.makepyfile(USES_VMLINUX)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    args += ["--kernel=debian:bookworm", f"--kernel-cache-dir={fresh_store}"]
    with ArchiveProxy(DEB_CACHE) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        proxy.hold("-dbg_", after=64 << 20)  # 64 MB into the debug package
        doomed = pytester.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert proxy.held.wait(900), "the download never reached the debug package"
        finally:
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        proxy.release.set()
        # apt-get died with it (PR_SET_PDEATHSIG), and writes no more into the store.
        deadline = time.monotonic() + 30
        while _processes_in(fresh_store) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_in(fresh_store) == []

    # Consistent: nothing published, no ref; only the killed build's debris in staging.
    assert _trees(fresh_store) == []
    assert list((fresh_store / "trees" / "refs").iterdir()) == []
    (debris,) = (fresh_store / "trees" / "staging").iterdir()
    listing = _cli("kernels", "--json", "--cache-dir", str(fresh_store))
    assert json.loads(listing)["kernels"] == []

    with ArchiveProxy(DEB_CACHE) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        result = run(pytester, "--kernel=debian:bookworm", f"--kernel-cache-dir={fresh_store}")
        result.assert_outcomes(passed=2)
    assert not debris.exists()
    assert list((fresh_store / "trees" / "staging").iterdir()) == []
    assert len(_trees(fresh_store)) == 1
    assert kernel_summary(result) == [
        f"ktstr: kernel bookworm-{bookworm.version} ({bookworm.release}): 2 passed, 0 failed,"
        " 0 skipped"
    ]

    # The run has ended: nothing uses the kernel, and it can be removed.
    removed = _cli("kernels", "remove", "debian:bookworm", "--cache-dir", str(fresh_store))
    assert removed.startswith(f"removed debian:bookworm/cloud-amd64: {bookworm.release}")
    assert _trees(fresh_store) == []
    assert json.loads(_cli("kernels", "--json", "--cache-dir", str(fresh_store)))["kernels"] == []


# --- the kernels command -----------------------------------------------------------------------


def _cli(*args: str, status: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == status, done.stderr
    return done.stdout if status == 0 else done.stderr


def test_kernels_lists_and_refuses_to_remove_one_in_use(fetched: dict[str, FetchedKernel]) -> None:
    listing = json.loads(_cli("kernels", "--json", "--cache-dir", str(FETCH_STORE)))
    by_spec = {spec: k for k in listing["kernels"] for spec in k["specs"]}
    for text, kernel in fetched.items():
        entry = by_spec[kernel.spec]
        assert text.split(":")[1] in entry["suite"]
        assert (entry["release"], entry["package_version"]) == (kernel.release, kernel.version)
        assert entry["size"] == kernel.size
        assert entry["in_use"]  # this process uses them (the session's store pins them)
    text = _cli("kernels", "--cache-dir", str(FETCH_STORE))
    rows = [line.split()[:4] for line in text.splitlines()]
    sid = fetched["debian:sid"]
    assert ["debian:sid/cloud-amd64", sid.release, "sid", sid.version] in rows
    said = _cli("kernels", "remove", "debian:sid", "--cache-dir", str(FETCH_STORE), status=1)
    assert "is in use by a running process" in said
    said = _cli("kernels", "remove", "debian:nosuch", "--cache-dir", str(FETCH_STORE), status=1)
    assert "no fetched kernel is 'debian:nosuch'; the kernel cache has:" in said


# --- several kernels, each in its own root -----------------------------------------------------


def test_each_kernel_resolves_in_its_own_sysroot(
    pytester: pytest.Pytester, fetched: dict[str, FetchedKernel]
) -> None:
    """Two releases installed in two roots, in one run: each named with its root (SPEC@DIR);
    a kernel without one takes --kernel-sysroot."""
    bookworm, sid = fetched["debian:bookworm"], fetched["debian:sid"]
    pytester.makepyfile(USES_VMLINUX)
    result = run(
        pytester,
        f"--kernel=old={bookworm.release}@{bookworm.sysroot}",
        f"--kernel=new={sid.release}",
        f"--kernel-sysroot={sid.sysroot}",
    )
    result.assert_outcomes(passed=4)
    kernels = {k["label"]: k for k in junit(pytester).kernels()}
    assert Path(kernels["old"]["vmlinux"]).is_relative_to(bookworm.sysroot)
    assert Path(kernels["new"]["vmlinux"]).is_relative_to(sid.sysroot)
    # Without its own root, the 6.1 release is looked for in sid's root, and is not there.
    failed = run(pytester, f"--kernel={bookworm.release}", f"--kernel-sysroot={sid.sysroot}")
    failed.assert_outcomes(errors=2)


def test_a_fetched_kernel_takes_no_sysroot(
    pytester: pytest.Pytester, fetched: dict[str, FetchedKernel], tmp_path: Path
) -> None:
    pytester.makepyfile(USES_VMLINUX)
    result = run(pytester, f"--kernel=debian:sid@{tmp_path}", f"--kernel-cache-dir={FETCH_STORE}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(["*a fetched kernel has its own root in the kernel cache; drop @*"])


# --- the examples on Debian unstable -----------------------------------------------------------


def test_the_examples_run_on_debian_sid_with_sched_ext(
    pytester: pytest.Pytester,
    proxied: ArchiveProxy,
    fetched: dict[str, FetchedKernel],
    scx_schedulers: Path,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One command, every example, on the kernel it fetches: the guests, the live reads and the
    sched_ext scheduler included (the test suite's scx_simple, as a user's would be)."""
    for path in EXAMPLES.glob("test_*.py"):
        shutil.copy(path, pytester.path / path.name)
    monkeypatch.setenv("KTSTR_EXAMPLE_SCHEDULER", str(scx_schedulers / "scx_simple"))
    sid = fetched["debian:sid"]
    result = run(
        pytester,
        "--kernel=debian:sid",
        f"--kernel-cache-dir={FETCH_STORE}",
        "--kernel-vm-timeout=900",  # generous: CI boots under TCG on two busy cores
    )
    outcomes = junit(pytester).outcomes()
    assert outcomes["test_scheduler.py::test_sched_ext_local_dsq"] == "passed"
    assert outcomes["test_scheduler.py::test_eevdf_fields"] == "passed"
    assert outcomes["test_scheduler.py::test_pre_eevdf_has_no_deadline"] == "skipped"
    assert outcomes["test_live_scheduler.py::test_sched_ext_runqueues"] == "passed"
    scx = "test_scx.py::test_the_scheduler_holds_and_every_cpu_runs_its_tasks[ktstr_vm]"
    assert outcomes[scx] == "passed"
    result.assert_outcomes(passed=12, skipped=1)
    summary = kernel_summary(result)
    assert (
        summary[0]
        == f"ktstr: kernel sid-{sid.version} ({sid.release}): 12 passed, 0 failed, 1 skipped"
    )
    assert summary[1].startswith(f"  1 skipped: ktstr: kernel sid-{sid.version} ({sid.release}) is")
    assert summary[1].endswith(", needs <= 6.5")
