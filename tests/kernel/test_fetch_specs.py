"""Fetch specs (``debian:sid``, ``debian:bookworm/rt-amd64``, ``debian:6.1.0-57-cloud-amd64``),
per-kernel sysroots (``SPEC@DIR``) and the offline setting: parsed before any program runs,
every bad input a KernelSpecError that says what is wrong, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelSpecError
from pytest_ktstr_vmlinux.kernel.fetch.archive import flavour_arch
from pytest_ktstr_vmlinux.kernel.fetch.build import wanted_paths
from pytest_ktstr_vmlinux.kernel.fetch.fetch import parse_offline
from pytest_ktstr_vmlinux.kernel.fetch.specs import FetchSpec, parse_fetch_spec
from pytest_ktstr_vmlinux.kernel.kernelset import KernelItem, parse_kernel_item
from pytest_ktstr_vmlinux.kernel.spec import SpecKind, parse_kernel_spec
from tests.helpers.fuzz import argv_text


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("debian:sid", FetchSpec("debian", suite="sid")),
        ("debian:bookworm-backports", FetchSpec("debian", suite="bookworm-backports")),
        ("debian:bookworm/rt-amd64", FetchSpec("debian", suite="bookworm", flavour="rt-amd64")),
        ("debian:sid/arm64", FetchSpec("debian", suite="sid", flavour="arm64")),
        ("debian:6.1.0-57-cloud-amd64", FetchSpec("debian", release="6.1.0-57-cloud-amd64")),
        (
            "debian:7.2.13+deb14-cloud-amd64",
            FetchSpec("debian", release="7.2.13+deb14-cloud-amd64"),
        ),
    ],
)
def test_fetch_specs_parse(text: str, spec: FetchSpec) -> None:
    assert parse_fetch_spec(text, "kernel") == spec
    assert parse_kernel_spec(text).fetch == spec
    assert parse_kernel_spec(text).kind is SpecKind.FETCH


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("debian:", "names no suite or release"),
        ("debian:Sid", "is not a suite name"),
        ("debian:sid/", "is not a flavour name"),
        ("debian:sid/Cloud", "is not a flavour name"),
        ("debian:sid/a/b", "is not a flavour name"),
        ("debian:6.1.0-57-cloud-amd64/amd64", "takes no /FLAVOUR"),
        ("debian:6..1", "is not a kernel release"),
        ("ubuntu:noble", "ubuntu: kernels are not fetched yet; fetched distros: debian"),
        ("fedora:41", "fedora: kernels are not fetched yet"),
    ],
)
def test_bad_fetch_specs_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(KernelSpecError, match="kernel") as raised:
        parse_kernel_spec(text)
    assert says in str(raised.value)
    assert repr(text) in str(raised.value)


def test_an_existing_path_wins_over_a_fetch_spec(tmp_path: Path) -> None:
    (tmp_path / "debian:sid").write_bytes(b"not a kernel image")
    spec = parse_kernel_spec("debian:sid", base=tmp_path)
    assert spec.kind is SpecKind.IMAGE
    assert spec.path == tmp_path / "debian:sid"


def test_an_unknown_prefix_is_no_fetch_spec() -> None:
    with pytest.raises(KernelSpecError, match="is not an existing path"):
        parse_kernel_spec("gentoo:latest")


@given(argv_text)
def test_fetch_spec_parsing_never_crashes(text: str) -> None:
    try:
        spec = parse_fetch_spec(f"debian:{text}", "kernel")
    except KernelSpecError:
        return
    # What parses names a suite or a release made of safe characters: it becomes file names.
    name = spec.release or spec.suite
    assert name is not None
    assert "/" not in name
    assert "\x00" not in name
    assert ".." not in (spec.flavour or "")


@pytest.mark.parametrize(
    ("text", "item"),
    [
        ("6.1.0-57-cloud-amd64@/srv/root", KernelItem(None, "6.1.0-57-cloud-amd64", "/srv/root")),
        ("old=6.1.0-57-cloud-amd64@~/r", KernelItem("old", "6.1.0-57-cloud-amd64", "~/r")),
        ("a=R@./root", KernelItem("a", "R", "./root")),
        ("a=x@y@/root", KernelItem("a", "x@y", "/root")),  # the last @ that starts a path
        ("a=linux@v6", KernelItem("a", "linux@v6")),  # no path after @: part of the spec
        ("debian:sid", KernelItem(None, "debian:sid")),
    ],
)
def test_a_kernel_item_may_carry_its_sysroot(text: str, item: KernelItem) -> None:
    assert parse_kernel_item(text, "--kernel") == item


def test_a_path_holding_at_is_taken_whole(tmp_path: Path) -> None:
    (tmp_path / "x@").mkdir()
    (tmp_path / "x@" / "bzImage").write_bytes(b"")
    assert parse_kernel_item("x@/bzImage", "--kernel", tmp_path) == KernelItem(None, "x@/bzImage")


def test_a_sysroot_without_a_kernel_is_refused() -> None:
    with pytest.raises(KernelSpecError, match="no kernel before @/root"):
        parse_kernel_item("a= @/root", "--kernel")


@pytest.mark.parametrize(("text", "value"), [("1", True), ("YES", True), ("on", True)])
def test_offline_values(text: str, value: bool) -> None:
    assert parse_offline(text, "$KTSTR_KERNEL_OFFLINE") is value
    assert parse_offline({"1": "0", "YES": "no", "on": "off"}[text], "x") is False


def test_an_offline_value_that_is_no_yes_or_no_is_refused() -> None:
    with pytest.raises(KernelSpecError, match=r"\$KTSTR_KERNEL_OFFLINE: 'maybe' is not a yes"):
        parse_offline("maybe", "$KTSTR_KERNEL_OFFLINE")


@given(st.text())
def test_offline_parsing_never_crashes(text: str) -> None:
    try:
        value = parse_offline(text, "x")
    except KernelSpecError as e:
        assert "is not a yes or no" in str(e)
    else:
        assert value is (text.strip().lower() in ("1", "true", "yes", "on"))


@pytest.mark.parametrize(
    ("flavour", "arch"),
    [
        ("amd64", "amd64"),
        ("cloud-amd64", "amd64"),
        ("rt-arm64", "arm64"),
        ("arm64-16k", "arm64"),
        ("686-pae", "i386"),
        ("armmp-lpae", "armhf"),
        ("powerpc64le-64k", "ppc64el"),
        ("nosuch", None),
    ],
)
def test_a_flavour_names_its_architecture(flavour: str, arch: str | None) -> None:
    assert flavour_arch(flavour) == arch


def test_only_the_files_the_resolver_looks_for_are_unpacked() -> None:
    wanted = wanted_paths("7.2.13+deb14-cloud-amd64")
    r = "7.2.13+deb14-cloud-amd64"
    for path in (
        f"usr/lib/modules/{r}/vmlinuz",
        f"usr/lib/modules/{r}/config",
        f"usr/lib/modules/{r}/System.map",
        f"usr/lib/debug/lib/modules/{r}/vmlinux",
        f"usr/lib/debug/boot/vmlinux-{r}",
        f"usr/lib/debug/vmlinux-{r}",
        f"boot/vmlinuz-{r}",
        f"boot/config-{r}",
    ):
        assert path in wanted
    assert f"usr/lib/debug/lib/modules/{r}/kernel/fs/ext4/ext4.ko" not in wanted
    assert all(not p.startswith("/") for p in wanted)
