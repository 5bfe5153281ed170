/*
 * pytest_ktstr_vmlinux._symsort: the two argsorts of a symbol table's cold build, in C.
 *
 * Optional: pytest_ktstr_vmlinux/formats/symsort.py falls back to Python's sorted() when this module
 * is not built, and must produce the same bytes. So both sorts are stable (equal keys keep
 * their .symtab order), names compare as unsigned bytes up to their NUL (as Python compares
 * latin-1 strs), and every read is bounded by the buffer it comes from: a damaged vmlinux
 * reaches here, and another thread may write to a bytearray while the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* A kept name, with the 8 bytes sort_names is at as a big-endian integer (zero past the name's
 * end): sorting moves and compares these, and reads strtab once per 8 bytes of a tied name. */
typedef struct {
    uint64_t prefix;
    uint32_t st_name;
    uint32_t len;
    uint32_t idx;
} name_key;

/* Runs shorter than this are insertion-sorted: a radix pass costs its 256 buckets whatever n. */
#define SMALL 48

/* Whether `fmt` names an unsigned integer of the native byte order (array, memoryview.cast,
 * numpy all spell it differently); the item size is checked apart. */
static int
native_unsigned(const char *fmt)
{
    const int little = PY_LITTLE_ENDIAN;
    if (fmt == NULL)
        return 0; /* no format: plain bytes, not a column */
    if (*fmt == '@' || *fmt == '=' || (*fmt == '<' && little)
        || ((*fmt == '>' || *fmt == '!') && !little))
        fmt++;
    return fmt[0] != '\0' && fmt[1] == '\0' && strchr("BHILQN", fmt[0]) != NULL;
}

/* A contiguous buffer of `itemsize`-byte items; unsigned native integers when `column`. */
static int
get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int column, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != itemsize || (column && !native_unsigned(view->format))) {
        PyErr_Format(PyExc_TypeError, "%s must be a buffer of %zd-byte%s items, not format '%s'",
                     what, itemsize, column ? " native unsigned" : "",
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The 8 bytes of a name from `depth` on as a big-endian integer, zero-padded past its end. */
static inline uint64_t
prefix_at(const unsigned char *name, size_t len, size_t depth)
{
    uint64_t prefix = 0;
    if (len >= depth + 8) {
        for (uint32_t b = 0; b < 8; b++)
            prefix = prefix << 8 | name[depth + b];
        return prefix;
    }
    for (size_t b = depth; b < depth + 8; b++)
        prefix = prefix << 8 | (b < len ? name[b] : 0);
    return prefix;
}

/* Stable sort of `keys` (n items) by prefix alone, `tmp` (n items) scratch: insertion for a
 * few, else LSD radix a byte a pass, skipping bytes all share (no mispredicted compares). */
static void
sort_prefixes(name_key *keys, name_key *tmp, size_t n, size_t (*count)[256])
{
    if (n < SMALL) {
        for (size_t i = 1; i < n; i++) {
            name_key item = keys[i];
            size_t j = i;
            for (; j > 0 && item.prefix < keys[j - 1].prefix; j--)
                keys[j] = keys[j - 1];
            keys[j] = item;
        }
        return;
    }
    memset(count, 0, 8 * sizeof *count);
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 8; d++)
            count[d][(keys[i].prefix >> (8 * d)) & 0xFF]++;
    name_key *src = keys, *dst = tmp;
    for (int d = 0; d < 8; d++) {
        if (count[d][(keys[0].prefix >> (8 * d)) & 0xFF] == n)
            continue;
        size_t at = 0;
        for (int b = 0; b < 256; b++) {
            size_t c = count[d][b];
            count[d][b] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[d][(src[i].prefix >> (8 * d)) & 0xFF]++] = src[i];
        name_key *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != keys)
        memcpy(keys, src, n * sizeof *keys);
}

typedef struct {
    size_t lo, hi;
    size_t depth;
} name_range;

/* Names sorted 8 bytes at a time (MSD): sort by the prefix at one depth, then each run that
 * ties there and goes on by the next 8 bytes. Kernel names share long prefixes (__kstrtab_,
 * trace_event_raw_), so this reads each name once per depth instead of at every comparison
 * (measured on Debian's vmlinux: 7 ms, against 12 ms for a merge sort comparing with memcmp).
 * The pending runs are disjoint, so `todo` (n / 2 + 1 items) holds them all: no recursion that
 * a damaged table's long names could deepen. */
static void
sort_names(name_key *keys, name_key *tmp, size_t n, const unsigned char *strtab, name_range *todo,
           size_t (*count)[256])
{
    size_t pending = 0;
    todo[pending++] = (name_range){0, n, 0};
    while (pending) {
        name_range r = todo[--pending];
        if (r.depth) {
            int same = 1; /* one string (ld merges duplicates): equal to the end, so in order */
            for (size_t i = r.lo; i < r.hi; i++) {
                keys[i].prefix = prefix_at(strtab + keys[i].st_name, keys[i].len, r.depth);
                same &= keys[i].st_name == keys[r.lo].st_name;
            }
            if (same)
                continue;
        }
        sort_prefixes(keys + r.lo, tmp + r.lo, r.hi - r.lo, count);
        for (size_t lo = r.lo, hi; lo < r.hi; lo = hi) {
            for (hi = lo + 1; hi < r.hi && keys[hi].prefix == keys[lo].prefix;)
                hi++;
            if (hi - lo > 1 && keys[lo].prefix & 0xFF) /* tied, and the names go on */
                todo[pending++] = (name_range){lo, hi, r.depth + 8};
        }
    }
}

/* Stable LSD radix sort of (value, idx) pairs, as sort_prefixes (10x Python's sorted(), which
 * compares boxed ints). Returns where the sorted indexes ended up: `idx` or `idx2`. */
static uint32_t *
sort_values(uint64_t *val, uint32_t *idx, uint64_t *val2, uint32_t *idx2, size_t n,
            size_t (*count)[256])
{
    memset(count, 0, 8 * sizeof *count);
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 8; d++)
            count[d][(val[i] >> (8 * d)) & 0xFF]++;
    for (int d = 0; d < 8; d++) {
        if (n == 0 || count[d][(val[0] >> (8 * d)) & 0xFF] == n)
            continue;
        size_t at = 0;
        for (int b = 0; b < 256; b++) {
            size_t c = count[d][b];
            count[d][b] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++) {
            size_t to = count[d][(val[i] >> (8 * d)) & 0xFF]++;
            val2[to] = val[i];
            idx2[to] = idx[i];
        }
        uint64_t *v = val;
        uint32_t *x = idx;
        val = val2;
        idx = idx2;
        val2 = v;
        idx2 = x;
    }
    return idx;
}

/* How many entries have a non-zero flag byte. */
static size_t
count_flags(const unsigned char *flags, Py_ssize_t n)
{
    size_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        k += flags[i] != 0;
    return k;
}

/* The checks both functions make: a column of `width`-byte integers and one flag byte per entry
 * of it, at most as many entries as u32 indexes reach. Fills `column`, `flags` and `n`. */
static int
get_arguments(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, const char *name,
              Py_buffer *column, Py_ssize_t width, const char *column_name, Py_buffer *flags,
              const char *flags_name, Py_ssize_t *n)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", name,
                     expected, nargs);
        return -1;
    }
    if (get_buffer(args[expected - 2], column, width, 1, column_name) < 0)
        return -1;
    if (get_buffer(args[expected - 1], flags, 1, 0, flags_name) < 0) {
        PyBuffer_Release(column);
        return -1;
    }
    *n = column->len / width;
    if (flags->len != *n || *n > (Py_ssize_t)UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries and %s %zd (at most 2**32 - 1)",
                     flags_name, flags->len, column_name, *n);
        PyBuffer_Release(flags);
        PyBuffer_Release(column);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(by_name_doc,
"by_name(strtab, st_name, keep, /) -> bytes\n\n"
"u32 indexes of the entries with a non-zero keep byte, ordered by the NUL-terminated name at\n"
"strtab[st_name[i]] (unsigned bytes), then by index. ValueError when a kept st_name lies\n"
"outside strtab, or strtab does not end with NUL.");

static PyObject *
by_name(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer strtab, st_name, keep;
    Py_ssize_t n;
    if (nargs == 3 && get_buffer(args[0], &strtab, 1, 0, "strtab") < 0)
        return NULL;
    if (get_arguments(args, nargs, 3, "by_name", &st_name, 4, "st_name", &keep, "keep", &n) < 0) {
        if (nargs == 3)
            PyBuffer_Release(&strtab);
        return NULL;
    }
    const unsigned char *strings = strtab.buf, *flags = keep.buf;
    const uint32_t *offsets = st_name.buf;
    size_t size = (size_t)strtab.len, k = count_flags(flags, n), j = 0;
    Py_ssize_t bad = -1;
    int terminated = size > 0 && strings[size - 1] == 0;
    PyObject *result = NULL;
    name_key *keys = PyMem_RawMalloc((k ? k : 1) * 2 * sizeof *keys);
    name_range *todo = PyMem_RawMalloc((k / 2 + 1) * sizeof *todo);
    size_t (*count)[256] = PyMem_RawMalloc(8 * sizeof *count);
    if (keys == NULL || todo == NULL || count == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && j < k; i++) {
        if (!flags[i])
            continue;
        uint32_t at = offsets[i];
        if (at >= size) {
            bad = i;
            break;
        }
        /* Bounded by the buffer, not by trusting its last NUL. */
        const unsigned char *name = strings + at, *end = memchr(name, 0, size - at);
        uint32_t len = (uint32_t)(end ? end - name : (Py_ssize_t)(size - at));
        keys[j++] = (name_key){prefix_at(name, len, 0), at, len, (uint32_t)i};
    }
    if (bad < 0 && terminated) {
        sort_names(keys, keys + k, j, strings, todo, count);
        uint32_t *out = (uint32_t *)(keys + k); /* the scratch half, free again */
        for (size_t i = 0; i < j; i++)
            out[i] = keys[i].idx;
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0)
        PyErr_Format(PyExc_ValueError, /* worded as symsort.outside() */
                     "symbol %zd's name (st_name %lu) lies outside its string table (%zu bytes)",
                     bad, (unsigned long)offsets[bad], size);
    else if (j && !terminated)
        PyErr_SetString(PyExc_ValueError, "the string table does not end with NUL");
    else
        result = PyBytes_FromStringAndSize((const char *)(keys + k), (Py_ssize_t)j * 4);
done:
    PyMem_RawFree(count);
    PyMem_RawFree(todo);
    PyMem_RawFree(keys);
    PyBuffer_Release(&keep);
    PyBuffer_Release(&st_name);
    PyBuffer_Release(&strtab);
    return result;
}

PyDoc_STRVAR(by_addr_doc,
"by_addr(st_value, sized, /) -> bytes\n\n"
"u32 indexes of the entries with a non-zero sized byte, ordered by the u64 st_value, then by\n"
"index.");

static PyObject *
by_addr(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer st_value, sized;
    Py_ssize_t n;
    if (get_arguments(args, nargs, 2, "by_addr", &st_value, 8, "st_value", &sized, "sized", &n) < 0)
        return NULL;
    const unsigned char *flags = sized.buf;
    const uint64_t *values = st_value.buf;
    size_t s = count_flags(flags, n), room = s ? s : 1, j = 0;
    PyObject *result = NULL;
    uint64_t *val = PyMem_RawMalloc(room * 2 * sizeof *val);
    uint32_t *idx = PyMem_RawMalloc(room * 2 * sizeof *idx), *sorted;
    size_t (*count)[256] = PyMem_RawMalloc(8 * sizeof *count);
    if (val == NULL || idx == NULL || count == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && j < s; i++) {
        if (flags[i]) {
            val[j] = values[i];
            idx[j++] = (uint32_t)i;
        }
    }
    sorted = sort_values(val, idx, val + room, idx + room, j, count);
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)sorted, (Py_ssize_t)j * 4);
done:
    PyMem_RawFree(count);
    PyMem_RawFree(val);
    PyMem_RawFree(idx);
    PyBuffer_Release(&sized);
    PyBuffer_Release(&st_value);
    return result;
}

static PyMethodDef methods[] = {
    {"by_name", (PyCFunction)(void (*)(void))by_name, METH_FASTCALL, by_name_doc},
    {"by_addr", (PyCFunction)(void (*)(void))by_addr, METH_FASTCALL, by_addr_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pytest_ktstr_vmlinux._symsort",
    .m_doc = "Stable argsorts of a symbol table by name and by address (see symsort.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__symsort(void)
{
    return PyModuleDef_Init(&module);
}
