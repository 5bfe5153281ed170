"""C type expressions ("struct scx_sched *", "u64[4]", "void (*)(int)") parsed and printed.

A type expression is what C calls a type name: specifiers and qualifiers, then an abstract
declarator (pointers, arrays, function parameters, parentheses to group). ``parse`` reads one
into a tree of the nodes below; ``spell`` prints a tree back as C does, so that ``parse(spell(t))
== t`` (what ``tests/formats/test_typeexpr.py`` fuzzes), and in the spelling BTF's type_name always
used: "char *", "int[4]", "struct rq *[8]", "int (*)[4]", "char *const".

The tree names no type ids: BTF resolves it (``overlay.py``), and the DWARF globals table stores
the spelling of each variable's type (``dwarf/ctypes.py``). Base types keep C's keywords in one
canonical order (gcc's, as its DWARF and BTF spell them: "long unsigned int"); whoever resolves
one also tries the other spellings a producer uses (``base_spellings``).

Bounds: an expression longer than MAX_LENGTH characters or nested deeper than MAX_DEPTH is
refused with a TypeExpressionError, as is anything else that is not a C type name; the message
shows where.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_LENGTH = 4096
MAX_DEPTH = 64
_QUALIFIER_WORDS = {
    "const": "const", "__const": "const", "__const__": "const",
    "volatile": "volatile", "__volatile__": "volatile",
    "restrict": "restrict", "__restrict": "restrict", "__restrict__": "restrict",
    "_Atomic": "",  # BTF has no atomic kind, and pahole drops it: dropped here too
}  # fmt: skip
_BASE_WORDS = frozenset(
    {"void", "char", "short", "int", "long", "signed", "unsigned", "_Bool", "float", "double"}
    | {"__int128", "__signed__", "__signed"}
)
_TAG_WORDS = ("struct", "union", "enum")
_TOKEN = re.compile(
    r"\s*(?:([A-Za-z_$][\w$]*)|(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*|(\.\.\.|[*\[\](),]))"
)


class TypeExpressionError(ValueError):
    """Text that is not a C type expression; the message quotes it and says where."""


@dataclass(frozen=True)
class Void:
    pass


@dataclass(frozen=True)
class Base:
    """A base type by its keywords in canonical order: "int", "long unsigned int", "_Bool"."""

    name: str


@dataclass(frozen=True)
class Tagged:
    """``struct NAME``, ``union NAME`` or ``enum NAME``."""

    word: str
    name: str


@dataclass(frozen=True)
class Typedef:
    """A typedef name (any identifier that is not a keyword): "u64", "atomic_t"."""

    name: str


@dataclass(frozen=True)
class Qualified:
    target: TypeExpr
    qualifier: str  # "const", "volatile" or "restrict"


@dataclass(frozen=True)
class Pointer:
    target: TypeExpr


@dataclass(frozen=True)
class Array:
    element: TypeExpr
    length: int | None  # None: "[]", a length not known (an extern array, a flexible member)


@dataclass(frozen=True)
class Function:
    """A function type: ``returns (params)``; ``params`` None for "()" without a prototype."""

    returns: TypeExpr
    params: tuple[TypeExpr, ...] | None
    variadic: bool = False


TypeExpr = Void | Base | Tagged | Typedef | Qualified | Pointer | Array | Function


def qualify(t: TypeExpr, qualifier: str) -> TypeExpr:
    """``t`` with ``qualifier``, as C has it: a qualified array is an array of qualified
    elements, a function takes none, and a qualifier already there is not added twice."""
    if isinstance(t, Array):
        return Array(qualify(t.element, qualifier), t.length)
    if isinstance(t, Function):
        return t
    inner: TypeExpr = t
    while isinstance(inner, Qualified):
        if inner.qualifier == qualifier:
            return t
        inner = inner.target
    return Qualified(t, qualifier)


def spell(t: TypeExpr) -> str:
    """C's spelling of ``t``: the base with its qualifiers, then the abstract declarator."""
    declarator = ""
    while True:
        quals: list[str] = []
        while isinstance(t, Qualified):
            quals.append(t.qualifier)
            t = t.target
        if isinstance(t, Pointer):
            space = " " if quals and declarator.startswith("*") else ""
            declarator = "*" + " ".join(quals) + space + declarator
            t = t.target
        elif isinstance(t, (Array, Function)):
            if declarator.startswith("*"):
                declarator = f"({declarator})"
            if isinstance(t, Array):
                declarator += f"[{'' if t.length is None else t.length}]"
                t = t.element
                for q in reversed(quals):  # a qualified array: C qualifies its elements
                    t = qualify(t, q)
            else:  # a qualified function type means nothing in C: the qualifiers go
                declarator += f"({_params(t)})"
                t = t.returns
        else:
            base = " ".join([*quals, _base(t)])
            if not declarator:
                return base
            return base + (" " if declarator[0] in "*(" else "") + declarator


def _base(t: TypeExpr) -> str:
    if isinstance(t, Void):
        return "void"
    if isinstance(t, Base):
        return t.name
    if isinstance(t, Tagged):
        return f"{t.word} {t.name}"
    if isinstance(t, Typedef):
        return t.name
    raise TypeError(f"not a type expression node: {t!r}")


def _params(f: Function) -> str:
    if f.params is None:
        return ""
    if not f.params and not f.variadic:
        return "void"
    return ", ".join([*map(spell, f.params), *(["..."] if f.variadic else [])])


def parse(text: str) -> TypeExpr:
    """The tree of C type expression ``text``; TypeExpressionError saying what is wrong."""
    if len(text) > MAX_LENGTH:
        raise TypeExpressionError(
            f"type expression of {len(text)} characters: at most {MAX_LENGTH} are read"
        )
    parser = _Parser(text)
    t = parser.type_name()
    if parser.peek() is not None:
        raise parser.error("expected the end")
    return t


def is_expression(text: str) -> bool:
    """Whether ``text`` needs the parser: more than a name, or "struct NAME" and the like."""
    return any(c in text for c in "*[]()") or bool(_QUALIFIER_OR_BASE.search(text))


_QUALIFIER_OR_BASE = re.compile(
    r"\b(?:" + "|".join(map(re.escape, [*_QUALIFIER_WORDS, *_BASE_WORDS])) + r")\b"
)


def base_spellings(name: str) -> tuple[str, ...]:
    """The spellings producers give base type ``name`` (canonical, as ``parse`` makes it):
    gcc's first, then clang's ("long unsigned int", "unsigned long")."""
    words = name.split()
    rest = [w for w in words if w not in ("unsigned", "int")]
    clang = " ".join((["unsigned"] if "unsigned" in words else []) + (rest or ["int"]))
    return tuple(dict.fromkeys((name, clang, *(("bool",) if name == "_Bool" else ()))))


# Canonical base names by the multiset of keywords (signed, int are implied where C implies them).
_SIZE_WORDS = {(): "int", ("short",): "short int", ("long",): "long int"}
_SIZE_WORDS[("long", "long")] = "long long int"


def _canonical_base(words: list[str]) -> str | None:
    """gcc's name of the base type C spells with ``words`` (in any order), None if none is."""
    words = ["signed" if w.startswith("__signed") else w for w in words]
    if words in (["void"], ["_Bool"], ["float"], ["double"]):
        return words[0]
    if sorted(words) == ["double", "long"]:
        return "long double"
    signs = [w for w in words if w in ("signed", "unsigned")]
    rest = [w for w in words if w not in ("signed", "unsigned")]
    if len(signs) > 1:
        return None
    if rest == ["char"]:
        return f"{signs[0]} char" if signs else "char"
    if rest == ["__int128"]:
        return "__int128 unsigned" if signs == ["unsigned"] else "__int128"
    sizes = tuple(sorted(w for w in rest if w != "int"))
    if rest.count("int") > 1 or sizes not in _SIZE_WORDS:
        return None
    base = _SIZE_WORDS[sizes]
    if signs == ["unsigned"]:
        return base[:-3] + "unsigned int" if sizes else "unsigned int"
    return base


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []
        at = 0
        while at < len(text):
            m = _TOKEN.match(text, at)
            if m is None:
                rest = text[at:]
                if rest.strip():
                    raise self.error("unexpected character", at + len(rest) - len(rest.lstrip()))
                break
            self.tokens.append((m.group(1) or m.group(2) or m.group(3), m.start(m.lastindex or 0)))
            at = m.end()
        self.at = 0
        self.depth = 0

    def error(self, what: str, column: int | None = None) -> TypeExpressionError:
        if column is None:
            column = self.tokens[self.at][1] if self.at < len(self.tokens) else len(self.text)
        return TypeExpressionError(
            f"not a C type expression: {self.text!r}: {what} at column {column + 1}; write"
            " one as C does, as in 'struct rq *', 'u64[4]', 'unsigned long', 'void (*)(int)'"
        )

    def peek(self, ahead: int = 0) -> str | None:
        at = self.at + ahead
        return self.tokens[at][0] if at < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.at += 1
        return token

    def expect(self, token: str) -> None:
        if self.peek() != token:
            raise self.error(f"expected {token!r}")
        self.at += 1

    def type_name(self) -> TypeExpr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH}")
        base = self.specifiers()
        t = self.abstract()(base)
        self.depth -= 1
        return t

    def specifiers(self) -> TypeExpr:
        quals: list[str] = []
        words: list[str] = []
        named: TypeExpr | None = None
        while (token := self.peek()) is not None:
            if token in _QUALIFIER_WORDS:
                self.at += 1
                if _QUALIFIER_WORDS[token] and _QUALIFIER_WORDS[token] not in quals:
                    quals.append(_QUALIFIER_WORDS[token])
            elif token in _BASE_WORDS and named is None:
                words.append(self.take())
            elif token in _TAG_WORDS and named is None and not words:
                self.at += 1
                name = self.peek()
                if name is None or not _is_identifier(name):
                    raise self.error(f"expected a name after {token!r}")
                self.at += 1
                named = Tagged(token, name)
            elif _is_identifier(token) and named is None and not words:
                self.at += 1
                named = Typedef(token)
            else:
                break
        if named is None and not words:
            raise self.error("expected a type")
        if named is not None and words:
            raise self.error("a base type keyword beside a named type")
        t: TypeExpr
        if named is not None:
            t = named
        else:
            canonical = _canonical_base(words)
            if canonical is None:
                raise self.error(f"{' '.join(words)!r} is no C base type")
            t = Void() if canonical == "void" else Base(canonical)
        for q in reversed(quals):
            t = Qualified(t, q)
        return t

    def abstract(self) -> Callable[[TypeExpr], TypeExpr]:
        """The abstract declarator here, as what it makes of the type it declares."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH}")
        pointers: list[list[str]] = []
        while self.peek() == "*":
            self.at += 1
            quals: list[str] = []
            while (token := self.peek()) in _QUALIFIER_WORDS:
                self.at += 1
                q = _QUALIFIER_WORDS[token or ""]
                if q and q not in quals:
                    quals.append(q)
            pointers.append(quals)
        inner: Callable[[TypeExpr], TypeExpr] | None = None
        if self.peek() == "(" and self.peek(1) in ("*", "(", "["):
            self.at += 1
            inner = self.abstract()
            self.expect(")")
        suffixes: list[Callable[[TypeExpr], TypeExpr]] = []
        while (token := self.peek()) in ("[", "("):
            self.at += 1
            suffixes.append(self.array() if token == "[" else self.function())
        self.depth -= 1

        def declare(t: TypeExpr) -> TypeExpr:
            for quals in pointers:
                t = Pointer(t)
                for q in reversed(quals):
                    t = Qualified(t, q)
            for suffix in reversed(suffixes):
                t = suffix(t)
            return t if inner is None else inner(t)

        return declare

    def array(self) -> Callable[[TypeExpr], TypeExpr]:
        length = None
        if self.peek() != "]":
            token = self.take()
            if not token[0].isdigit():
                self.at -= 1
                raise self.error("expected an array length")
            base = 16 if token[:2].lower() == "0x" else 8 if token[0] == "0" else 10
            length = int(token, base)
        self.expect("]")
        return lambda t: Array(t, length)

    def function(self) -> Callable[[TypeExpr], TypeExpr]:
        if self.peek() == ")":
            self.at += 1
            return lambda t: Function(t, None)
        params: list[TypeExpr] = []
        variadic = False
        while True:
            if self.peek() == "..." and params:
                self.at += 1
                variadic = True
                break
            params.append(self.type_name())
            if self.peek() != ",":
                break
            self.at += 1
        self.expect(")")
        if params == [Void()] and not variadic:
            params = []
        made = tuple(params)
        return lambda t: Function(t, made, variadic)


def _is_identifier(token: str) -> bool:
    return (
        (token[0].isalpha() or token[0] in "_$")
        and token not in _QUALIFIER_WORDS
        and token not in _BASE_WORDS
        and token not in _TAG_WORDS
    )
