"""What a scheduler or BPF test suite does with the kernel fixtures.

Runs on the running kernel by default; where the host has no debug vmlinux the vmlinux tests skip
with the probe summary. Point it at another kernel with --kernel (see the README).
"""

from __future__ import annotations

from pathlib import Path

from elftools.elf.elffile import ELFFile

from pytest_ktstr_vmlinux import Kernel

# e_machine for each arch name the plugin reports.
E_MACHINE = {
    "x86_64": {"EM_X86_64"},
    "i386": {"EM_386"},
    "arm64": {"EM_AARCH64"},
    "riscv64": {"EM_RISCV"},
}


def test_kernel_is_identified(kernel: Kernel) -> None:
    # Needs no vmlinux: a test can always say which kernel it is about.
    assert kernel.release, kernel.report.format()
    print(f"kernel {kernel.release} ({kernel.arch}) image={kernel.image} vmlinux={kernel.vmlinux}")


def test_vmlinux_is_an_elf_for_the_kernel_arch(kernel: Kernel, vmlinux_bytes: memoryview) -> None:
    assert bytes(vmlinux_bytes[:4]) == b"\x7fELF"
    machine = int.from_bytes(vmlinux_bytes[18:20], "little" if vmlinux_bytes[5] == 1 else "big")
    assert machine in (62, 3, 183, 243, 40), f"unexpected e_machine {machine}"


def test_vmlinux_has_symbols_and_btf(kernel: Kernel, vmlinux_path: Path) -> None:
    # A debug vmlinux carries .symtab (symbol addresses) and, with CONFIG_DEBUG_INFO_BTF, .BTF.
    with open(vmlinux_path, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_machine in E_MACHINE.get(kernel.arch or "", {elf.header.e_machine})
        assert elf.get_section_by_name(".symtab") is not None, f"{vmlinux_path} has no .symtab"
        names = {section.name for section in elf.iter_sections()}
    print(f"{vmlinux_path}: .BTF {'present' if '.BTF' in names else 'absent'}")
