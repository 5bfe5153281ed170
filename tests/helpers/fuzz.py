"""Hypothesis strategies shared by the fuzz tests: damage that real files suffer, and the text
that command-line arguments can hold."""

from __future__ import annotations

import os

from hypothesis import strategies as st


@st.composite
def mutations(draw: st.DrawFn, seed: bytes, min_edits: int = 1) -> bytes:
    """``seed`` with up to six edits: bit flips, boundary bytes, inserted or deleted runs, and
    length or offset fields (u16/u32/u64, aligned or not, either byte order) overwritten with
    extreme values; then maybe cut short."""
    buf = bytearray(seed)
    for _ in range(draw(st.integers(min_edits, 6))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "splice", "word")))
        if op == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[at] = draw(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, buf[at] + 1 & 0xFF)))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "splice":  # a u32 anywhere overwritten with an extreme value
            buf[at : at + 4] = draw(st.sampled_from((0, 1, 0x7FFFFFFF, 0xFFFFFFFF))).to_bytes(
                4, draw(st.sampled_from(("big", "little")))
            )
        else:  # an aligned field overwritten with an extreme value
            at -= at % 4
            width = draw(st.sampled_from((2, 4, 8)))
            value = draw(st.sampled_from((0, 1, 0x7FFFFFFF, (1 << 8 * width) - 1, 1 << 31)))
            buf[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(
                width, draw(st.sampled_from(("big", "little")))
            )
    if draw(st.booleans()):
        del buf[draw(st.integers(0, len(buf))) :]
    return bytes(buf)


# What a command-line argument can hold: any text, the surrogate-escaped bytes that are not UTF-8
# (as Python decodes argv), and strings made of a member path's and an address's characters, which
# reach the grammar's corners that random text seldom does.
argv_text = st.one_of(
    st.text(),
    st.binary().map(os.fsdecode),
    st.from_regex(r"[ a-z_$0-9x.\[\]+-]{0,16}", fullmatch=True),
)
