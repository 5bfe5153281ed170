"""Distro kernels on demand: ``debian:sid`` fetched with the distro's own client, verified by
it, unpacked into a tree of the store and resolved there like any kernel in a sysroot.

``specs`` parses fetch specs; ``fetch`` is the flow every distro shares (refs, trees, locks,
offline use); ``distro`` what a distro module gives it; ``debian`` Debian's suites, flavours and
packages; ``apt`` Debian's client on private lists; ``unpack`` the few files a kernel needs out
of a package; ``process`` the programs run; ``progress`` what is said meanwhile; ``listing`` the
fetched kernels, for ``ktstr-vmlinux kernels``.
"""
