"""Reading the running guest kernel from the host: its RAM translated through the guest's own
page tables (``translate``), the KASLR slide and physical base found in the guest (``layout``),
values typed by BTF (``objects``), and ``LiveKernel``, which puts them together (``kernel``).
"""

from .errors import LiveKernelError, LiveMemoryError
from .kernel import LiveKernel
from .objects import Enumerator, Object, container_of, sizeof
from .sampling import Samples

__all__ = [
    "Enumerator",
    "LiveKernel",
    "LiveKernelError",
    "LiveMemoryError",
    "Object",
    "Samples",
    "container_of",
    "sizeof",
]
