"""Kernel versions: what a requirement may spell, what a release string starts with, and the
order kernel developers read (6.12 < 6.12.3 < 6.13-rc1 < 6.13-rc2 < 6.13)."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.kernel.versions import KernelVersion, parse_version, release_version

# --- parse_version: a requirement's spelling ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.12", KernelVersion(6, 12, 0)),
        ("6.12.3", KernelVersion(6, 12, 3)),
        ("6.13-rc1", KernelVersion(6, 13, 0, final=False, rc=1)),
        ("6.13.2-rc4", KernelVersion(6, 13, 2, final=False, rc=4)),
        ("5.4.289", KernelVersion(5, 4, 289)),
        ("10.0", KernelVersion(10, 0, 0)),
        ("  6.1\n", KernelVersion(6, 1, 0)),  # surrounding blanks are not part of it
    ],
)
def test_parse_version_accepts(text: str, expected: KernelVersion) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "6",
        "v6.12",
        "6.12.",
        "6.12.3.4",
        "6.12-rc",
        "6.12-rc1+",
        "6.1.0-56-cloud-amd64",  # a release, not a requirement: the suffix would be ignored
        "6.12a",
        "six.twelve",
        "6,12",
        "٦.١٢",  # Arabic-Indic digits: \d would take them without re.ASCII
    ],
)
def test_parse_version_rejects_with_the_text_and_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a kernel version like") as raised:
        parse_version(text)
    assert str(raised.value) == f"{text!r} is not a kernel version like 6.12, 6.12.3 or 6.13-rc1"


def test_missing_patch_is_zero_and_minor_is_numeric() -> None:
    assert parse_version("6.12") == parse_version("6.12.0")
    # 6.1 is not 6.10: a minor is a number, not a decimal fraction.
    assert parse_version("6.1") < parse_version("6.2") < parse_version("6.10")
    assert parse_version("6.9.12") < parse_version("6.10")


def test_str_spells_the_full_version() -> None:
    assert str(parse_version("6.12")) == "6.12.0"
    assert str(parse_version("6.13-rc2")) == "6.13.0-rc2"
    assert str(parse_version("6.1.192")) == "6.1.192"


# --- release_version: the version a release string starts with ----------------------------------


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("6.1.0-56-cloud-amd64", "6.1.0"),  # Debian
        ("6.11.4-200.fc41.x86_64", "6.11.4"),  # Fedora
        ("6.10.3-arch1-1", "6.10.3"),  # Arch
        ("5.15.0-1052-azure", "5.15.0"),  # Ubuntu
        ("6.8.0+", "6.8.0"),  # a tree with uncommitted changes
        ("6.13.0-rc1+", "6.13.0-rc1"),
        ("6.13-rc1-dirty", "6.13.0-rc1"),
        ("6.12-rc", "6.12.0"),  # -rc without a number is a suffix, not a release candidate
        ("6.1.192", "6.1.192"),
        ("6.18.44-fc-v669", "6.18.44"),
        (" 6.6.30 ", "6.6.30"),
    ],
)
def test_release_version_ignores_suffixes(release: str, expected: str) -> None:
    assert str(release_version(release)) == expected


@pytest.mark.parametrize("release", ["", "running", "linux-6.1", "v6.1", "6", "6.", "-6.1"])
def test_release_without_a_version(release: str) -> None:
    assert release_version(release) is None


# --- the order --------------------------------------------------------------------------------


def test_the_documented_chain() -> None:
    chain = ["6.12", "6.12.3", "6.13-rc1", "6.13-rc2", "6.13", "6.13.1-rc1", "6.13.1", "7.0-rc1"]
    versions = [parse_version(text) for text in chain]
    for low, high in itertools.pairwise(versions):
        assert low < high, (low, high)
    assert sorted(reversed(versions)) == versions


def test_rc_numbers_compare_as_numbers() -> None:
    assert parse_version("6.13-rc2") < parse_version("6.13-rc10") < parse_version("6.13")


def test_a_release_compares_by_its_version_alone() -> None:
    debian, fedora = release_version("6.1.0-56-cloud-amd64"), release_version("6.1.0-1.fc38")
    assert debian == fedora == parse_version("6.1")
    assert debian is not None and debian < parse_version("6.1.1")


# --- properties ---------------------------------------------------------------------------------

NUMBER = st.integers(min_value=0, max_value=10**6 - 1)
RC = st.one_of(st.none(), st.integers(min_value=1, max_value=10**6 - 1))


@st.composite
def spelled(draw: st.DrawFn) -> tuple[str, Fraction]:
    """A version as a developer writes it, and where it sits on the number line: a release at
    an integer, its candidates in the open interval just below it, rc1 lowest."""
    major, minor, rc = draw(NUMBER), draw(NUMBER), draw(RC)
    patch = draw(st.one_of(st.none(), NUMBER))
    text = f"{major}.{minor}" + (f".{patch}" if patch is not None else "")
    text += f"-rc{rc}" if rc is not None else ""
    point = Fraction((major * 10**6 + minor) * 10**6 + (patch or 0))
    if rc is not None:
        point -= 1 - Fraction(rc, 10**6)
    return text, point


@given(spelled(), spelled())
def test_order_matches_the_number_line(a: tuple[str, Fraction], b: tuple[str, Fraction]) -> None:
    (text_a, point_a), (text_b, point_b) = a, b
    va, vb = parse_version(text_a), parse_version(text_b)
    assert (va < vb) == (point_a < point_b)
    assert (va == vb) == (point_a == point_b)
    assert (va > vb) == (point_a > point_b)


@given(st.lists(spelled(), min_size=3, max_size=8))
def test_order_is_total(spellings: list[tuple[str, Fraction]]) -> None:
    versions = [parse_version(text) for text, _ in spellings]
    for x, y in itertools.product(versions, repeat=2):
        assert sum([x < y, x == y, x > y]) == 1  # trichotomy
        assert (x <= y) == (not y < x)
    for x, y, z in itertools.permutations(versions, 3):
        if x <= y and y <= z:
            assert x <= z  # transitivity
    ordered = sorted(versions)
    assert all(x <= y for x, y in itertools.pairwise(ordered))
    assert sorted(reversed(ordered)) == ordered


@given(spelled())
def test_str_round_trips(version: tuple[str, Fraction]) -> None:
    parsed = parse_version(version[0])
    assert parse_version(str(parsed)) == parsed


# A suffix must not continue the version: no digit, ".<digit>" or "-rc<digit>" right after it.
SUFFIX = st.one_of(
    st.sampled_from(["-56-cloud-amd64", "-200.fc41.x86_64", "-arch1-1", "+", "-dirty", "-rc"]),
    st.text(min_size=1, max_size=20),
).filter(lambda s: re.match(r"\d|\.\d|-rc\d", s) is None)


@given(spelled(), SUFFIX)
def test_release_version_is_the_version_before_any_suffix(
    version: tuple[str, Fraction], suffix: str
) -> None:
    text = version[0]
    assert release_version(text + suffix) == parse_version(text)
    assert release_version(text) == parse_version(text)
