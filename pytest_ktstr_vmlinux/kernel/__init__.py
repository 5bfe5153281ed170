"""From what the user named to the kernel's paired files: the spec (``spec``), paths inside a
guest root (``sysroot``), the kernel's image, tree, release and arch in one ``FoundImage``
(``images``), the vmlinux search and its report (``locate``), build identity and pairing
(``identity``), the whole resolution (``resolve``: spec -> ``FoundImage`` -> pairing ->
``Kernel``), where a kernel keeps its config (``config``), several kernels in one run
(``kernelset``), versions and ``ktstr`` requirements (``versions``, ``requirements``), and the
config, symbols and BTF of a resolved kernel (``artifacts``).
"""
