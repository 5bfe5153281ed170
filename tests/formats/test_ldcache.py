"""glibc's ld.so.cache (formats/ldcache.py) against glibc's own ldconfig: the host's cache as
`ldconfig -p` lists it, a cache ldconfig writes for a folder of ours, and a cache we write as
`ldconfig -p -C` reads it back. Damaged caches are LdCacheError, never another exception."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.formats.ldcache import (
    FLAG_ELF_LIBC6,
    FLAG_X8664_LIB64,
    CacheEntry,
    LdCacheError,
    build_cache,
    libcmp,
    parse_cache,
)
from tests.helpers.fuzz import mutations
from tests.helpers.programs import build_greeter

HOST_CACHE = Path("/etc/ld.so.cache")
X86_64 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64


def _ldconfig() -> str:
    found = shutil.which("ldconfig") or (
        "/sbin/ldconfig" if Path("/sbin/ldconfig").exists() else None
    )
    if found is None:
        pytest.skip("needs ldconfig (libc-bin)")
    return found


def _listing(cache: Path) -> list[tuple[str, str]]:
    """(name, path) of every entry, in order, as `ldconfig -p` prints them."""
    out = subprocess.run(
        [_ldconfig(), "-p", "-C", str(cache)], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(r"^\t(\S+) \(.*\) => (.*)$", out, re.MULTILINE)


@pytest.mark.skipif(not HOST_CACHE.exists(), reason="the host has no /etc/ld.so.cache")
def test_the_hosts_cache_reads_as_ldconfig_lists_it() -> None:
    cache = parse_cache(HOST_CACHE.read_bytes())
    assert [(e.name, e.path) for e in cache.entries] == _listing(HOST_CACHE)
    assert cache.generator is not None and cache.generator.startswith("ldconfig")
    libc = cache.lookup("libc.so.6", X86_64)
    assert libc and Path(libc[0].path).name == "libc.so.6"


@pytest.mark.skipif(not HOST_CACHE.exists(), reason="the host has no /etc/ld.so.cache")
def test_ldconfigs_order_is_libcmp_descending() -> None:
    """The loader binary-searches the entries: ldconfig sorts them by _dl_cache_libcmp, which
    compares runs of digits as numbers."""
    names = [e.name for e in parse_cache(HOST_CACHE.read_bytes()).entries]
    assert all(libcmp(a, b) >= 0 for a, b in itertools.pairwise(names))
    assert libcmp("libc.so.10", "libc.so.6") > 0  # 10 > 6, not "1" < "6"
    assert libcmp("libfoo.so", "libfoo.so.1") < 0
    assert libcmp("liba.so", "liba.so") == 0
    assert libcmp("lib2.so", "libx.so") > 0  # a digit sorts after any other byte


def test_a_cache_ldconfig_writes_for_our_folder(tmp_path: Path) -> None:
    build_greeter(tmp_path)
    written = tmp_path / "ld.so.cache"
    subprocess.run(
        [_ldconfig(), "-X", "-C", str(written), "-f", "/dev/null", str(tmp_path / "lib")],
        check=True,
        capture_output=True,
    )
    cache = parse_cache(written.read_bytes())
    assert [(e.name, e.path) for e in cache.entries] == _listing(written)
    assert cache.lookup("libgreet.so.1", X86_64) == [
        CacheEntry("libgreet.so.1", str(tmp_path / "lib/libgreet.so.1"), X86_64)
    ]


def test_a_cache_we_write_reads_back_in_ldconfig(tmp_path: Path) -> None:
    entries = [
        CacheEntry("libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1", X86_64),
        CacheEntry("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", X86_64),
        CacheEntry("libfoo.so.10", "/opt/foo/libfoo.so.10", X86_64),
        CacheEntry("libfoo.so.9", "/opt/foo/libfoo.so.9", X86_64),
        CacheEntry("libélan.so.1", "/opt/é/libélan.so.1", X86_64),
    ]
    ours = tmp_path / "ours.cache"
    ours.write_bytes(build_cache(entries))
    listed = _listing(ours)
    assert sorted(listed) == sorted((e.name, e.path) for e in entries)
    assert [n for n, _ in listed][:2] == ["libz.so.1", "libfoo.so.10"]  # ldconfig's order
    assert parse_cache(ours.read_bytes()).entries == tuple(
        next(e for e in entries if (e.name, e.path) == pair) for pair in listed
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.from_regex(r"lib[a-z0-9._+-]{1,12}\.so(\.[0-9]{1,3}){0,2}", fullmatch=True),
                  st.from_regex(r"/[a-z0-9/._-]{1,30}", fullmatch=True)),
        max_size=20,
    )
)  # fmt: skip
def test_build_then_parse_round_trips_in_the_loaders_order(pairs: list[tuple[str, str]]) -> None:
    entries = list(dict.fromkeys(CacheEntry(n, p, X86_64) for n, p in pairs))
    parsed = parse_cache(build_cache(entries)).entries
    assert sorted(parsed, key=lambda e: (e.name, e.path)) == sorted(
        entries, key=lambda e: (e.name, e.path)
    )
    assert all(libcmp(a.name, b.name) >= 0 for a, b in itertools.pairwise(parsed))


_SEED = build_cache(
    [CacheEntry(f"libx{i}.so.{i}", f"/usr/lib/libx{i}.so.{i}", X86_64) for i in range(6)]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(_SEED))
def test_damaged_caches_raise_only_ldcacheerror(data: bytes) -> None:
    with contextlib.suppress(LdCacheError):
        parse_cache(data)


def test_what_is_wrong_is_named() -> None:
    with pytest.raises(LdCacheError, match=r"no glibc-ld\.so\.cache1\.1 header"):
        parse_cache(b"not a cache at all, not at all")
    broken = bytearray(_SEED)
    broken[28] = 1  # the endianness flag: "invalid"
    with pytest.raises(LdCacheError, match="byte order is invalid"):
        parse_cache(bytes(broken))
    broken = bytearray(_SEED)
    broken[20:24] = (10**6).to_bytes(4, "little")  # nlibs
    with pytest.raises(LdCacheError, match="nlibs 1000000: the entries run past the end"):
        parse_cache(bytes(broken))
