"""C type expressions: parsed as C reads them, printed back the same, and never a crash.

The expected trees are C's own reading (the "spiral rule": suffixes bind before prefixes,
parentheses group), written out by hand for each shape a kernel variable has.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.formats.btf.typeexpr import (
    MAX_DEPTH,
    MAX_LENGTH,
    Array,
    Base,
    Function,
    Pointer,
    Qualified,
    Tagged,
    Typedef,
    TypeExpr,
    TypeExpressionError,
    Void,
    base_spellings,
    is_expression,
    parse,
    qualify,
    spell,
)

FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
rq = Tagged("struct", "rq")
INT = Base("int")
CHAR = Base("char")


@pytest.mark.parametrize(
    ("text", "tree", "spelled"),
    [
        ("struct scx_sched *", Pointer(Tagged("struct", "scx_sched")), "struct scx_sched *"),
        ("u64[4]", Array(Typedef("u64"), 4), "u64[4]"),
        ("unsigned long", Base("long unsigned int"), "long unsigned int"),
        ("long unsigned", Base("long unsigned int"), "long unsigned int"),
        ("unsigned", Base("unsigned int"), "unsigned int"),
        ("signed", INT, "int"),
        ("short", Base("short int"), "short int"),
        ("unsigned short int", Base("short unsigned int"), "short unsigned int"),
        ("long long", Base("long long int"), "long long int"),
        ("unsigned long long int", Base("long long unsigned int"), "long long unsigned int"),
        ("signed char", Base("signed char"), "signed char"),
        ("unsigned char", Base("unsigned char"), "unsigned char"),
        ("long double", Base("long double"), "long double"),
        ("_Bool", Base("_Bool"), "_Bool"),
        ("void", Void(), "void"),
        ("const char *", Pointer(Qualified(CHAR, "const")), "const char *"),
        ("char const *", Pointer(Qualified(CHAR, "const")), "const char *"),
        ("char *const", Qualified(Pointer(CHAR), "const"), "char *const"),
        ("struct rq *[8]", Array(Pointer(rq), 8), "struct rq *[8]"),
        ("struct rq (*)[8]", Pointer(Array(rq, 8)), "struct rq (*)[8]"),
        ("int[2][3]", Array(Array(INT, 3), 2), "int[2][3]"),
        ("int [0x10]", Array(INT, 16), "int[16]"),
        ("char[]", Array(CHAR, None), "char[]"),
        ("int (*)(void)", Pointer(Function(INT, ())), "int (*)(void)"),
        ("int (*)()", Pointer(Function(INT, None)), "int (*)()"),
        (
            "void (*)(struct rq *, int)",
            Pointer(Function(Void(), (Pointer(rq), INT))),
            "void (*)(struct rq *, int)",
        ),
        ("int (*)(int, ...)", Pointer(Function(INT, (INT,), True)), "int (*)(int, ...)"),
        ("void (*[4])(void)", Array(Pointer(Function(Void(), ())), 4), "void (*[4])(void)"),
        (
            "int (*(*)(long))[3]",
            Pointer(Function(Pointer(Array(INT, 3)), (Base("long int"),))),
            "int (*(*)(long int))[3]",
        ),
        (
            "const volatile u64",
            Qualified(Qualified(Typedef("u64"), "volatile"), "const"),
            "const volatile u64",
        ),
        ("char *restrict", Qualified(Pointer(CHAR), "restrict"), "char *restrict"),
        ("char *__restrict", Qualified(Pointer(CHAR), "restrict"), "char *restrict"),
        ("_Atomic int", INT, "int"),  # BTF has no atomic kind: dropped, as pahole does
        ("enum system_states", Tagged("enum", "system_states"), "enum system_states"),
        ("union bpf_attr *", Pointer(Tagged("union", "bpf_attr")), "union bpf_attr *"),
    ],
)
def test_c_reads_it_so(text: str, tree: TypeExpr, spelled: str) -> None:
    assert parse(text) == tree
    assert spell(tree) == spelled
    assert parse(spelled) == tree


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "expected a type at column 1"),
        ("struct", "expected a name after 'struct'"),
        ("int int", "'int int' is no C base type"),
        ("unsigned signed", "no C base type"),
        ("struct rq *[", "unexpected end"),
        ("struct rq [x]", "expected an array length"),
        ("u64 u32", "expected the end at column 5"),
        ("unsigned u64", "expected the end"),
        ("long struct rq", "expected the end"),
        ("int @", "unexpected character at column 5"),
        ("int (*", "expected ')'"),
        ("int (...)", "expected a type"),
        ("[3]", "expected a type at column 1"),
    ],
)
def test_what_is_not_a_type_is_said(text: str, where: str) -> None:
    with pytest.raises(TypeExpressionError, match="not a C type expression") as e:
        parse(text)
    assert where in str(e.value)
    assert repr(text) in str(e.value)


def test_bounds() -> None:
    with pytest.raises(TypeExpressionError, match=f"at most {MAX_LENGTH}"):
        parse("int" + " " * MAX_LENGTH)
    with pytest.raises(TypeExpressionError, match="nested deeper"):
        parse("int " + "(" * (MAX_DEPTH + 1) + "*" + ")" * (MAX_DEPTH + 1))
    parse("int " + "(" * 20 + "*" + ")" * 20)  # deep, but within the bound


def test_base_spellings_are_gccs_then_clangs() -> None:
    assert base_spellings("long unsigned int") == ("long unsigned int", "unsigned long")
    assert base_spellings("short int") == ("short int", "short")
    assert base_spellings("long long unsigned int") == (
        "long long unsigned int",
        "unsigned long long",
    )
    assert base_spellings("unsigned int") == ("unsigned int",)
    assert base_spellings("_Bool") == ("_Bool", "bool")


def test_qualify_follows_c() -> None:
    assert qualify(Array(CHAR, 3), "const") == Array(Qualified(CHAR, "const"), 3)
    assert qualify(Qualified(CHAR, "const"), "const") == Qualified(CHAR, "const")
    f = Function(INT, ())
    assert qualify(f, "volatile") == f
    # A qualified array is printed as C has it: its elements qualified, once.
    assert spell(Qualified(Array(Qualified(CHAR, "const"), 3), "const")) == "const char[3]"


def test_what_needs_the_parser() -> None:
    assert is_expression("struct rq *")
    assert is_expression("unsigned long")
    assert is_expression("u64[4]")
    assert not is_expression("struct rq")
    assert not is_expression("u64")


# --- fuzzing ----------------------------------------------------------------------------------

names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: not is_expression(n) and n not in ("struct", "union", "enum")
)
bases = st.one_of(
    st.sampled_from(
        [Void(), INT, CHAR, Base("long unsigned int"), Base("short int"), Base("_Bool")]
    ),
    names.map(Typedef),
    st.tuples(st.sampled_from(["struct", "union", "enum"]), names).map(lambda t: Tagged(*t)),
)


def _extend(inner: st.SearchStrategy[TypeExpr]) -> st.SearchStrategy[TypeExpr]:
    qualifiers = st.sampled_from(["const", "volatile", "restrict"])
    return st.one_of(
        inner.map(Pointer),
        st.tuples(inner, st.one_of(st.none(), st.integers(0, 1 << 20))).map(lambda t: Array(*t)),
        st.tuples(inner, qualifiers).map(lambda t: qualify(*t)),
        st.tuples(
            inner,
            st.one_of(st.none(), st.lists(inner, max_size=3).map(tuple)),
            st.booleans(),
        ).map(lambda t: Function(t[0], t[1], bool(t[1]) and t[2])),
    )


trees = st.recursive(bases, _extend, max_leaves=8)


def _normal(t: object) -> bool:
    """Trees C can write: no function returns an array or a function, no array of functions
    or of void, no void parameter, a qualifier once per level."""
    if isinstance(t, Qualified):
        return not isinstance(t.target, (Array, Function)) and _normal(t.target)
    if isinstance(t, Pointer):
        return _normal(t.target)
    if isinstance(t, Array):
        return not isinstance(t.element, (Function, Void)) and _normal(t.element)
    if isinstance(t, Function):
        params = t.params or ()
        return (
            not isinstance(t.returns, (Array, Function))
            and all(_normal(p) and p != Void() for p in params)
            and _normal(t.returns)
        )
    return True


@FUZZ
@given(tree=trees.filter(_normal))
def test_fuzz_spelling_reads_back(tree: TypeExpr) -> None:
    assert parse(spell(tree)) == tree


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.from_regex(r"[a-z_ *\[\]()0-9,.]{0,40}", fullmatch=True),
        st.lists(
            st.sampled_from(
                ["int", "long", "unsigned", "char", "const", "struct", "x", "*", "[", "]",
                 "(", ")", ",", "...", "4", "0x1", "void", "volatile", "_Bool"]
            ),
            max_size=14,
        ).map(" ".join),
    )
)  # fmt: skip
def test_fuzz_text_parses_or_says_why(text: str) -> None:
    try:
        tree = parse(text)
    except TypeExpressionError as e:
        assert "not a C type expression" in str(e) or "characters" in str(e)
        return
    assert parse(spell(tree)) == tree
