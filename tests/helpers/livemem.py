"""A live kernel's memory without a guest: bytearrays at kernel virtual addresses, read the way
``Object`` reads a LiveKernel, so the typed layer is tested with BTF built by hand."""

from __future__ import annotations

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.btf.types import BTFType
from pytest_ktstr_vmlinux.live.errors import LiveMemoryError
from pytest_ktstr_vmlinux.live.objects import Object

TRANSPARENT = {"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"}


class FakeKernel:
    """``Memory`` over regions: {virtual start: bytearray}; anything else is unmapped."""

    def __init__(self, btf: BTF, regions: dict[int, int]) -> None:
        self.btf = btf
        self.regions = {start: bytearray(size) for start, size in regions.items()}

    def _at(self, address: int, size: int) -> tuple[bytearray, int]:
        for start, data in self.regions.items():
            if start <= address and address + size <= start + len(data):
                return data, address - start
        raise LiveMemoryError(f"{size} bytes at {address:#x} are not mapped", address)

    def write(self, address: int, data: bytes) -> None:
        region, at = self._at(address, len(data))
        region[at : at + len(data)] = data

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, value.to_bytes(8, "little"))

    def read(self, address: int, size: int, physical: bool = False) -> bytes:
        region, at = self._at(address, size)
        return bytes(region[at : at + size])

    def read_u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def read_string(self, address: int, limit: int) -> bytes:
        out = bytearray()
        while len(out) < limit:
            byte = self.read(address + len(out), 1)
            if byte == b"\0":
                break
            out += byte
        return bytes(out)

    def view(self, address: int, size: int) -> memoryview:
        region, at = self._at(address, size)
        return memoryview(region)[at : at + size]

    def real_type(self, tid: int) -> BTFType:
        t = self.btf.type(tid)
        while t.kind in TRANSPARENT and t.target:
            t = self.btf.type(t.target)
        return t

    def object(self, type: str | int, address: int) -> Object:
        return Object(self, self.btf.type(type).id, address)
