"""What reading a live kernel raises; both are KernelArtifactErrors, as the library's are."""

from __future__ import annotations

from ..errors import KernelArtifactError


class LiveKernelError(KernelArtifactError):
    """The guest's kernel cannot be read as asked: its layout cannot be derived, a member or
    symbol is missing, a value has no meaning for the type."""


class LiveMemoryError(LiveKernelError):
    """An address that does not lead to guest RAM: outside it, or through a page table entry
    that is not present. ``address`` is the address asked for."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class MissingMemberError(LiveKernelError, KeyError, AttributeError):
    """A member the type does not have (the message names close ones): a KeyError for
    ``obj["path"]`` and an AttributeError for ``obj.name``, so ``hasattr`` works."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
