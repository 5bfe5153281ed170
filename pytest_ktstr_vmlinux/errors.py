"""The one exception family the library raises, so callers can catch kernel problems alone."""

from __future__ import annotations


class KernelArtifactError(Exception):
    """A kernel artifact (image, vmlinux, ...) is missing, unreadable or malformed.

    The message names the file, what is wrong with it and what to do about it.
    """


class KernelSpecError(KernelArtifactError):
    """What the user named as a kernel cannot be a kernel: a missing path, an unreadable file.

    The pytest plugin turns this into a usage error at startup, before any test runs.
    """


class VmlinuxNotFoundError(KernelArtifactError):
    """No vmlinux was found for a kernel that needs one. The first line of the message says
    which kernel; the lines after it are the probe report, one candidate a line."""
