"""Live reads of hostile memory (issue 19, items 10 and 11): a kernel under test may be broken, so
what its memory says is bounded by what the kernel itself allows, and a read that had to stop
short says so.

The corruption is real: the guest (Debian's 6.1 under TCG, KASLR) is paused, a word of its
kernel's memory is overwritten through its RAM file, read back, and restored before it resumes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_ktstr_vmlinux.live import LiveKernel, LiveKernelError
from pytest_ktstr_vmlinux.live.objects import STRING_LIMIT
from pytest_ktstr_vmlinux.vm import GuestVM
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 2


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    with tcg_guest(
        debian_kernel,
        cpus=CPUS,
        log_dir=tmp_path_factory.mktemp("corrupted"),
    ) as vm:
        yield vm


def _fresh(guest: GuestVM) -> LiveKernel:
    """A LiveKernel that has read nothing yet (``guest.kernel`` keeps what it read)."""
    live = guest.kernel
    return LiveKernel(guest.memory, live.symbols, live.btf, layout=live.layout)


class _Corrupted:
    """Guest physical ``[phys, phys + len(data))`` overwritten while the guest is paused."""

    def __init__(self, guest: GuestVM, phys: int, data: bytes) -> None:
        self.guest, self.phys, self.data = guest, phys, data

    def __enter__(self) -> None:
        self.guest.qmp.pause()
        self.saved = bytes(self.guest.memory.read(self.phys, len(self.data)))
        self.guest.memory.write(self.phys, self.data)

    def __exit__(self, *exc: object) -> None:
        self.guest.memory.write(self.phys, self.saved)
        self.guest.qmp.resume()


def test_a_corrupted_nr_cpu_ids_is_refused_not_read_past_the_cpumask(guest: GuestVM) -> None:
    live = _fresh(guest)
    nr_cpu_ids = live.translate(live.symbols["nr_cpu_ids"])
    nr_cpus = 8 * live.btf.sizeof("struct cpumask")  # NR_CPUS, as the kernel's type holds it
    with _Corrupted(guest, nr_cpu_ids, (1 << 20).to_bytes(4, "little")):
        with pytest.raises(LiveKernelError) as e:
            _ = _fresh(guest).cpus
        with pytest.raises(LiveKernelError):
            _fresh(guest).per_cpu("runqueues", 3000)
    assert str(e.value) == (
        f"nr_cpu_ids reads 1048576 (at {live.symbols['nr_cpu_ids']:#x}), not 1 to {nr_cpus}"
        " (NR_CPUS, the bits of its struct cpumask): the guest's memory there is corrupted,"
        " or the symbols are not this kernel's"
    )
    zero = (0).to_bytes(4, "little")
    with _Corrupted(guest, nr_cpu_ids, zero), pytest.raises(LiveKernelError, match="reads 0 "):
        _ = _fresh(guest).cpus
    assert _fresh(guest).cpus == tuple(range(CPUS))
    assert guest.run("nproc").stdout == f"{CPUS}\n".encode()  # restored: the guest runs on


def test_a_char_pointer_without_a_nul_is_an_error_not_a_cut_string(guest: GuestVM) -> None:
    """rootfs_fs_type.name points to "rootfs" in the kernel's rodata; with the NUL and what
    follows overwritten, no string ends within the limit."""
    live = _fresh(guest)
    name = live.object("rootfs_fs_type", "struct file_system_type").name
    assert name.string_() == "rootfs"
    text = live.translate(name.value_())
    with _Corrupted(guest, text, b"r" * (STRING_LIMIT + 64)):
        with pytest.raises(LiveKernelError) as e:
            name.string_()
        assert name.read_() == name.read_()  # the pointer itself still reads
    assert str(e.value).startswith(
        f"const char * at {name.address_:#x}: no NUL ends the string at {name.value_():#x}"
        f" within {STRING_LIMIT} bytes"
    )
    assert name.string_() == "rootfs"
    with _Corrupted(guest, text, b"r" * STRING_LIMIT + b"\0"):
        assert name.string_() == "r" * STRING_LIMIT  # exactly the limit is still whole
