"""The pytest adapter, and only pytest: options and ini keys with their precedence
(``settings``), hooks and the kernel fixtures (``hooks``), the ``ktstr`` marker (``markers``),
per-kernel results for JUnit (``results``) and the guest fixtures (``vm``). The pytest11 entry
point ``ktstr_vmlinux`` names ``plugin.hooks``.
"""
