"""What can go wrong with a guest, as errors of the library's one family.

Every message of a guest that has started names its console file and ends with the console's
last lines: a test report alone should say why the guest failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KernelArtifactError


@dataclass(frozen=True)
class GuestResult:
    """A command's exit status (None when it timed out) and its output, as bytes. Kept with the
    errors, which carry one."""

    #: The command as given to ``run``.
    command: str
    #: Its exit status; None when it timed out.
    returncode: int | None
    #: What it wrote to standard output.
    stdout: bytes
    #: What it wrote to standard error.
    stderr: bytes


class GuestError(KernelArtifactError):
    """A guest could not be booted, or stopped, or a request to its agent failed."""


class GuestUnavailableError(GuestError):
    """This host cannot boot guests: QEMU or a static busybox is not installed.

    ``packages`` are the Debian packages that provide what is missing; the plugin skips (or,
    under ``--kernel-strict``, fails) the tests that need a guest, naming them.
    """

    def __init__(self, message: str, packages: tuple[str, ...]) -> None:
        super().__init__(message)
        self.packages = packages


class GuestBootError(GuestError):
    """The guest did not reach its agent: ``reason`` is ``panic``, ``oops``, ``exited`` (QEMU
    stopped without either) or ``deadline`` (still booting when the boot timeout passed)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GuestCommandError(GuestError):
    """``run(..., check=True)`` of a command that exited non-zero; ``result`` has its output."""

    def __init__(self, message: str, result: GuestResult) -> None:
        super().__init__(message)
        self.result = result


class GuestTimeoutError(GuestError):
    """A command outlived its timeout. The guest has been killed; ``result`` holds the output
    the command had written by then (``returncode`` None)."""

    def __init__(self, message: str, result: GuestResult) -> None:
        super().__init__(message)
        self.result = result


class GuestProtocolError(GuestError):
    """The guest answered a request with something the agent's protocol does not allow: a
    malformed reply line, or a payload in the transfer window that does not match its frame
    (something in the guest wrote over it, again when the host fetched it once more). The
    message names the request and what was wrong; no answer is made up from it."""


class GuestStoppedError(GuestError):
    """A request to a guest that is no longer running (shut down, killed, or it panicked)."""


class GuestWarning(UserWarning):
    """Something about guests worth one line: KVM was asked for (``auto``) but is unusable
    here, so guests run under TCG, much slower."""


class GuestProgramError(GuestError):
    """A program for the guest cannot be packed with what it needs to run there (``programs=``):
    not found, another machine's, a library or interpreter missing on the host; or a program
    ``put`` into a guest that lacks its loader or libraries. The message names the file and
    what is missing."""
