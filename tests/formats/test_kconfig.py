"""Kernel config: .config parsing, IKCONFIG extraction (where it is found: kernel/test_config)."""

from __future__ import annotations

import gzip
import mmap
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats import kconfig
from pytest_ktstr_vmlinux.formats.kconfig import (
    IKCONFIG_END,
    IKCONFIG_START,
    KernelConfig,
    config_from_ikconfig,
    extract_ikconfig,
    parse_config,
)
from tests.helpers.fakes import ikconfig_blob

R = "6.1.0-99-cloud-amd64"

SAMPLE = """\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_BUILTIN=y
CONFIG_MODULAR=m
# CONFIG_OFF is not set
CONFIG_HZ=250
CONFIG_NEGATIVE=-3
CONFIG_PHYSICAL_START=0x1000000
CONFIG_UPPER_HEX=0XFF
CONFIG_EMPTY=""
CONFIG_QUOTED="say \\"hi\\" to C:\\\\linux"
CONFIG_BARE=n
CONFIG_WORD=abc

# a comment that is not a symbol
CONFIG_CRLF=y\r
"""


def gzip_config(text: str) -> bytes:
    return gzip.compress(text.encode())


def kconfig_quote(value: str) -> str:
    # As scripts/kconfig's sym_escape_string_value writes a string symbol.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- parsing --------------------------------------------------------------------------------------


def test_parse_every_value_kind() -> None:
    cfg = parse_config(SAMPLE, "/src/linux/.config")
    assert cfg.source == "/src/linux/.config"
    assert dict(cfg) == {
        "CONFIG_CC_VERSION_TEXT": "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
        "CONFIG_BUILTIN": "y",
        "CONFIG_MODULAR": "m",
        "CONFIG_OFF": None,
        "CONFIG_HZ": 250,
        "CONFIG_NEGATIVE": -3,
        "CONFIG_PHYSICAL_START": 0x1000000,
        "CONFIG_UPPER_HEX": 255,
        "CONFIG_EMPTY": "",
        "CONFIG_QUOTED": 'say "hi" to C:\\linux',
        "CONFIG_BARE": "n",
        "CONFIG_WORD": "abc",
        "CONFIG_CRLF": "y",
    }
    assert type(cfg["HZ"]) is int
    assert "CONFIG_OFF" in cfg and cfg["CONFIG_OFF"] is None


def test_quoted_numbers_stay_strings() -> None:
    cfg = parse_config('CONFIG_A="250"\nCONFIG_B="0x10"\nCONFIG_C="y"\n', "t")
    assert dict(cfg) == {"CONFIG_A": "250", "CONFIG_B": "0x10", "CONFIG_C": "y"}


def test_later_assignment_wins_and_empty_text_is_empty() -> None:
    cfg = parse_config("CONFIG_X=y\n# CONFIG_X is not set\nCONFIG_Y=1\nCONFIG_Y=2\n", "t")
    assert dict(cfg) == {"CONFIG_X": None, "CONFIG_Y": 2}
    assert len(parse_config("", "t")) == 0
    assert len(parse_config("# only\n\n   \n#comments\n", "t")) == 0


def test_lookups_accept_names_with_or_without_prefix() -> None:
    cfg = parse_config(SAMPLE, "t")
    assert cfg["HZ"] == cfg["CONFIG_HZ"] == 250
    assert cfg.get("WORD") == cfg.get("CONFIG_WORD") == "abc"
    assert cfg.get("MISSING") is None and cfg.get("MISSING", 7) == 7
    assert "HZ" in cfg and "CONFIG_HZ" in cfg and "MISSING" not in cfg
    assert next(iter(cfg)) == "CONFIG_CC_VERSION_TEXT"  # iteration: full names, file order
    with pytest.raises(KeyError, match="NOPE"):
        cfg["NOPE"]
    with pytest.raises(KeyError):
        cfg[1]  # type: ignore[index]
    assert 1 not in cfg  # type: ignore[comparison-overlap]


def test_enabled() -> None:
    cfg = parse_config(SAMPLE, "t")
    for name in ("BUILTIN", "CONFIG_BUILTIN", "MODULAR", "CONFIG_MODULAR", "CRLF"):
        assert cfg.enabled(name), name
    for name in ("OFF", "CONFIG_OFF", "BARE", "HZ", "WORD", "EMPTY", "MISSING", "CONFIG_MISSING"):
        assert not cfg.enabled(name), name


def test_equality_and_repr() -> None:
    a = parse_config("CONFIG_A=y\n", "one")
    b = parse_config("# comment\nCONFIG_A=y\n", "two")
    assert a == b and a == {"CONFIG_A": "y"}
    assert a != parse_config("CONFIG_A=m\n", "one")
    assert repr(a) == "KernelConfig(source='one', 1 symbols)"
    assert isinstance(KernelConfig({"CONFIG_Z": 1}, "built"), KernelConfig)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("FOO=y", "expected CONFIG_NAME=value"),
        ("CONFIG_FOO", "expected CONFIG_NAME=value"),
        ("CONFIG_FOO y", "expected CONFIG_NAME=value"),
        ("CONFIG_=y", "expected CONFIG_NAME=value"),
        ("CONFIG_F-O=y", "expected CONFIG_NAME=value"),
        ('CONFIG_FOO="unterminated', "without a closing quote"),
        ('CONFIG_FOO="ends in backslash\\', "without a closing quote"),
        ('CONFIG_FOO="a" junk', "after the closing quote"),
        ("CONFIG_FOO=" + "9" * 5000, "digits"),
    ],
)
def test_malformed_line_names_source_and_line(line: str, why: str) -> None:
    text = f"# header\nCONFIG_OK=y\n\n{line}\nCONFIG_AFTER=y\n"
    with pytest.raises(KernelArtifactError, match=re.escape(why)) as info:
        parse_config(text, "/src/linux/.config")
    assert str(info.value).startswith("/src/linux/.config:4: malformed kernel config line ")


def test_malformed_message_shortens_a_long_line() -> None:
    with pytest.raises(KernelArtifactError) as info:
        parse_config("x" * 10_000, "f")
    assert "..." in str(info.value) and len(str(info.value)) < 300


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(exclude_characters="\n\r", codec="utf-8")))
def test_kconfig_quoting_round_trips(value: str) -> None:
    cfg = parse_config(f"CONFIG_S={kconfig_quote(value)}\n", "t")
    assert cfg["S"] == value


# --- IKCONFIG -------------------------------------------------------------------------------------


def test_extract_from_synthetic_blob() -> None:
    blob = ikconfig_blob(SAMPLE)
    assert extract_ikconfig(blob, what="blob") == SAMPLE
    cfg = config_from_ikconfig(blob, what="blob")
    assert cfg is not None
    assert cfg.source == "IKCONFIG in blob"
    assert cfg == parse_config(SAMPLE, "t")


def test_extract_from_every_buffer_kind(tmp_path: Path) -> None:
    blob = ikconfig_blob(SAMPLE)
    assert extract_ikconfig(memoryview(blob), what="v") == SAMPLE
    # A view of part of a buffer: offsets must be into the view, not the object behind it.
    padded = b"IKCFG_ST-not-gzip" + blob
    assert extract_ikconfig(memoryview(padded)[17:], what="v") == SAMPLE
    assert extract_ikconfig(memoryview(bytearray(blob)), what="v") == SAMPLE
    # A view of another item format still counts bytes.
    as_chars = memoryview(blob).cast("c")
    assert extract_ikconfig(as_chars, what="v") == SAMPLE  # type: ignore[arg-type]
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    with (
        path.open("rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
        memoryview(m) as view,
    ):
        assert extract_ikconfig(view, what="m") == SAMPLE


def test_marker_straddling_search_chunks() -> None:
    # The chunked search over a partial view must find a marker cut by a chunk boundary.
    start = (1 << 20) - 3
    blob = b"\0" + b"j" * start + IKCONFIG_START + gzip_config(SAMPLE) + IKCONFIG_END
    assert extract_ikconfig(memoryview(blob)[1:], what="v") == SAMPLE


def test_tiny_chunks_exercise_chunked_search_and_inflate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kconfig, "_CHUNK", 5)
    blob = b"!" + ikconfig_blob(SAMPLE)
    assert extract_ikconfig(memoryview(blob)[1:], what="v") == SAMPLE
    assert extract_ikconfig(blob, what="v") == SAMPLE
    truncated = memoryview(blob[: len(blob) - len(IKCONFIG_END) - 20])[1:]
    with pytest.raises(KernelArtifactError, match="truncated"):
        extract_ikconfig(truncated, what="v")


def test_no_marker_is_none() -> None:
    assert extract_ikconfig(b"", what="v") is None
    assert extract_ikconfig(b"\x7fELF" + gzip_config(SAMPLE) + IKCONFIG_END, what="v") is None
    assert config_from_ikconfig(b"IKCFG_S", what="v") is None


def test_corrupt_gzip_after_marker_raises() -> None:
    good = gzip_config(SAMPLE)
    corrupt = good[:10] + bytes(b ^ 0xFF for b in good[10:40]) + good[40:]
    with pytest.raises(KernelArtifactError, match=r"^vm: IKCONFIG gzip stream at offset 0xc"):
        extract_ikconfig(b"junk" + IKCONFIG_START + corrupt + IKCONFIG_END, what="vm")


def test_bad_crc_raises() -> None:
    good = bytearray(gzip_config(SAMPLE))
    good[-8] ^= 1  # the CRC32 in the gzip trailer
    with pytest.raises(KernelArtifactError, match="corrupt"):
        extract_ikconfig(IKCONFIG_START + bytes(good), what="vm")


def test_truncated_gzip_raises() -> None:
    good = gzip_config(SAMPLE)
    with pytest.raises(KernelArtifactError, match=r"^vm: .* is truncated"):
        extract_ikconfig(IKCONFIG_START + good[: len(good) // 2], what="vm")


def test_marker_without_gzip_raises() -> None:
    with pytest.raises(KernelArtifactError, match="not followed by a gzip stream"):
        extract_ikconfig(b"xx" + IKCONFIG_START + b"plain text", what="vm")
    with pytest.raises(KernelArtifactError, match="offset 0x0 is not followed"):
        extract_ikconfig(IKCONFIG_START, what="vm")


def test_stray_marker_before_the_real_copy_is_skipped() -> None:
    blob = IKCONFIG_START + b"\x1f\x8b\x08 bogus" + IKCONFIG_START + b"!" + ikconfig_blob(SAMPLE)
    assert extract_ikconfig(blob, what="v") == SAMPLE


def test_oversized_stream_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kconfig, "MAX_CONFIG_BYTES", 4096)
    assert extract_ikconfig(ikconfig_blob("CONFIG_A=y\n" * 300), what="v") is not None
    with pytest.raises(KernelArtifactError, match="inflates past"):
        extract_ikconfig(ikconfig_blob("CONFIG_A=y\n" * 400), what="v")


def test_ikconfig_stops_at_end_of_stream() -> None:
    # Trailing data after the member (IKCFG_ED, the rest of .rodata) is not decompressed.
    blob = IKCONFIG_START + gzip_config(SAMPLE) + gzip_config("CONFIG_SECOND=y\n")
    assert extract_ikconfig(blob, what="v") == SAMPLE


def test_malformed_embedded_config_names_ikconfig_source() -> None:
    with pytest.raises(KernelArtifactError, match=r"^IKCONFIG in /boot/vmlinux:2: malformed"):
        config_from_ikconfig(ikconfig_blob("CONFIG_A=y\nbad\n"), what="/boot/vmlinux")


# --- real kernels ---------------------------------------------------------------------------------


@pytest.mark.real_kernel
def test_tinyconfig_vmlinux_ikconfig_matches_dot_config(tinyconfig_tree: Path) -> None:
    dot_config = tinyconfig_tree / ".config"
    expected = parse_config(dot_config.read_text(), str(dot_config))
    assert expected.enabled("IKCONFIG")
    vmlinux = tinyconfig_tree / "vmlinux"
    embedded = config_from_ikconfig(vmlinux.read_bytes(), what=str(vmlinux))
    assert embedded is not None
    assert embedded.source == f"IKCONFIG in {vmlinux}"
    assert dict(embedded) == dict(expected)


# --- fuzzing: nothing but KernelArtifactError escapes ---------------------------------------------

_FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_LINE_PARTS = st.sampled_from(
    ["CONFIG_", "A", "_1", "=", "y", "m", "n", '"', "\\", "#", " is not set", " ", "0x", "-", "7"]
)
_CONFIGISH = st.lists(st.lists(_LINE_PARTS, max_size=8).map("".join), max_size=12).map("\n".join)


@_FUZZ
@given(st.one_of(st.text(), _CONFIGISH))
def test_fuzz_parse_config(text: str) -> None:
    try:
        cfg = parse_config(text, "fuzz")
    except KernelArtifactError as error:
        assert str(error).startswith("fuzz:")
        return
    for name, value in cfg.items():
        assert name.startswith("CONFIG_")
        assert value is None or isinstance(value, (str, int))
        assert cfg[name] == value and cfg.enabled(name) == (value in ("y", "m"))


def _blobs() -> st.SearchStrategy[bytes]:
    junk = st.binary(max_size=256)
    gz = st.sampled_from([gzip_config(SAMPLE), gzip_config("")])
    damaged = st.tuples(gz, st.integers(0, 200), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    )
    stream = st.one_of(gz, damaged, gz.map(lambda g: g[:-5]), st.just(b"\x1f\x8b\x08"), junk)
    marked = st.tuples(junk, stream, junk).map(lambda t: t[0] + IKCONFIG_START + t[1] + t[2])
    return st.one_of(st.binary(max_size=512), marked)


@_FUZZ
@given(_blobs(), st.booleans())
def test_fuzz_extract_ikconfig(blob: bytes, as_view: bool) -> None:
    data = memoryview(b"!" + blob)[1:] if as_view else blob
    try:
        text = extract_ikconfig(data, what="fuzz")
    except KernelArtifactError as error:
        assert str(error).startswith("fuzz:")
        assert IKCONFIG_START in blob
        return
    assert (text is None) == (IKCONFIG_START not in blob)
    try:
        config_from_ikconfig(data, what="fuzz")
    except KernelArtifactError as error:
        assert str(error).startswith("IKCONFIG in fuzz:")
