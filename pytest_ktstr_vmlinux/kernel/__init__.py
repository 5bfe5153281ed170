"""From what the user named to the kernel's paired files: the spec (``spec``), paths inside a
guest root (``sysroot``), the vmlinux search and its report (``locate``), build identity and
pairing (``identity``), the whole resolution (``resolve``: spec -> candidates -> pairing ->
``Kernel``), several kernels in one run (``kernelset``), versions and ``ktstr`` requirements
(``versions``, ``requirements``), and the config, symbols and BTF of a resolved kernel
(``artifacts``).
"""
