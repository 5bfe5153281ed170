"""The command line (``python -m pytest_ktstr_vmlinux``, ``ktstr-vmlinux``): the verbs and their
output (``main``), and the symbol and BTF queries (``query``).
"""
