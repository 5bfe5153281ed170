"""The optional C argsorts of pytest_ktstr_vmlinux/formats/symsort.py; metadata: pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and symsort.py sorts in
Python (the same artifact, a slower cold build).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pytest_ktstr_vmlinux.formats._symsort",
            ["pytest_ktstr_vmlinux/formats/_symsort.c"],
            optional=True,
        )
    ]
)
