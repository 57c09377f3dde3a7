#!/usr/bin/python3
"""Checks the Julia bindings (examples/julia/Owlore.jl) against the header.

Julia is not a Debian package, so the bindings cannot be run here; this
checker instead compares them mechanically with include/owlore/owlore.h:

  - every OWL_API function has a ccall in the Julia file, and every ccall
    of it names the C return type's and each parameter's Julia counterpart,
    in order (C -> Julia: int32_t and the int32_t enum typedefs -> Int32,
    uint64_t -> UInt64, double -> Cdouble, const char * -> Cstring, opaque
    handle pointers -> Ptr{Cvoid}, handle out-parameters -> Ptr{Ptr{Cvoid}},
    struct pointers -> Ptr{T} or Ref{T} with T the struct's Julia name,
    other pointers -> Ptr{X} or Ref{X}, void -> Cvoid);
  - no ccall names a function the header does not declare;
  - every struct of the header has a Julia struct (owl_esd_result ->
    EsdResult) with the same field names and types in the same order;
  - every enumeration constant exists in Julia as Int32(value).

Usage: check_julia.py <owlore.h> <Owlore.jl> [--self-test]
--self-test also feeds the checker mutated copies of the Julia file (a
binding removed, a parameter type changed, struct fields swapped, an enum
value changed) and counts a pass only when each mutation is caught.
Prints "N passed, N failed"; exits 1 when anything failed.
"""
import re
import sys

INT_TYPES = {
    'int32_t': 'Int32', 'uint32_t': 'UInt32', 'int64_t': 'Int64',
    'uint64_t': 'UInt64', 'uint8_t': 'UInt8', 'int8_t': 'Int8',
    'size_t': 'Csize_t', 'double': 'Cdouble', 'float': 'Cfloat',
}
# Julia spellings that denote the same type.
ALIASES = {'Float64': 'Cdouble', 'Float32': 'Cfloat', 'Nothing': 'Cvoid'}


def julia_struct_name(c_name):
    """owl_esd_result -> EsdResult."""
    base = c_name[4:] if c_name.startswith('owl_') else c_name
    return ''.join(part[:1].upper() + part[1:] for part in base.split('_'))


class Header:
    def __init__(self, text):
        text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
        text = re.sub(r'//[^\n]*', ' ', text)
        # Preprocessor lines, with their continuations.
        text = re.sub(r'^[ \t]*#(?:[^\n]*\\\n)*[^\n]*', ' ', text, flags=re.M)
        self.int_aliases = set(re.findall(r'typedef\s+int32_t\s+(\w+)\s*;', text))
        self.handles = set(n for tag, n in re.findall(
            r'typedef\s+struct\s+(\w+)\s+(\w+)\s*;', text))
        self.structs = {}
        for body, name in re.findall(
                r'typedef\s+struct\s+\w+\s*\{(.*?)\}\s*(\w+)\s*;', text, re.S):
            fields = []
            for decl in body.split(';'):
                decl = ' '.join(decl.split())
                if decl:
                    ctype, fname = split_declarator(decl)
                    fields.append((fname, ctype))
            self.structs[name] = fields
        self.enums = {}
        for body in re.findall(r'enum\s*\{(.*?)\}\s*;', text, re.S):
            for item in body.split(','):
                item = item.strip()
                if item:
                    name, value = [s.strip() for s in item.split('=')]
                    self.enums[name] = int(value, 0)
        self.functions = {}
        for m in re.finditer(r'\bOWL_API\s+([^;{]*?)\b(\w+)\s*\(([^)]*)\)\s*;', text):
            ret = ' '.join(m.group(1).split())
            params = []
            plist = ' '.join(m.group(3).split())
            if plist != 'void':
                for p in plist.split(','):
                    params.append(split_declarator(p.strip())[0])
            self.functions[m.group(2)] = (ret, params)

    def julia_types(self, ctype, where):
        """The set of Julia spellings accepted for a C type; `where` is
        'ret', 'param' or 'field' (Ref{T} is only for parameters)."""
        t = ctype.replace('const ', '').strip()
        depth = t.count('*')
        base = t.replace('*', '').strip()
        if depth == 0:
            if base == 'void':
                return {'Cvoid'}
            if base in self.int_aliases:
                return {'Int32'}
            if base in INT_TYPES:
                return {INT_TYPES[base]}
            raise ValueError('no Julia mapping for ' + ctype)
        if depth == 1 and base == 'char':
            return {'Cstring'} if where != 'field' else {'Cstring', 'Ptr{UInt8}'}
        if base in self.handles or base == 'void':
            inner = 'Cvoid'   # opaque: owl_context * -> Ptr{Cvoid}
        elif base in self.structs:
            inner = julia_struct_name(base)
        elif base in self.int_aliases:
            inner = 'Int32'
        elif base in INT_TYPES:
            inner = INT_TYPES[base]
        else:
            raise ValueError('no Julia mapping for ' + ctype)
        if depth == 1 and (base in self.handles or base == 'void'):
            return {'Ptr{Cvoid}'}   # a handle or a buffer, never a Ref
        for _ in range(depth - 1):
            inner = 'Ptr{%s}' % inner
        accepted = {'Ptr{%s}' % inner}
        if where == 'param':
            accepted.add('Ref{%s}' % inner)
        return accepted


def split_declarator(decl):
    """'const owl_tensor *x' -> ('const owl_tensor *', 'x')."""
    m = re.match(r'^(.*?)(\w+)$', decl)
    ctype = m.group(1).replace(' *', '*').replace('*', ' *').strip()
    ctype = re.sub(r'\s*\*\s*', '*', ctype)
    ctype = re.sub(r'(\w)\*', r'\1 *', ctype)
    return ctype, m.group(2)


def split_top(text):
    """Splits on commas outside {} () []."""
    parts, depth, cur = [], 0, ''
    for ch in text:
        if ch in '{([':
            depth += 1
        elif ch in '})]':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def normalize_julia(t):
    t = re.sub(r'\s+', '', t)
    for a, b in ALIASES.items():
        t = re.sub(r'\b%s\b' % a, b, t)
    return t


class Julia:
    def __init__(self, text):
        text = re.sub(r'#=.*?=#', ' ', text, flags=re.S)
        text = re.sub(r'"""[\s\S]*?"""', '""', text)
        text = re.sub(r'#[^\n]*', '', text)
        self.ccalls = {}   # name -> list of (ret, [params])
        for m in re.finditer(r'ccall\s*\(\s*\(\s*:(\w+)\s*,\s*\w+\s*\)\s*,', text):
            rest = text[m.end():]
            # Return type: up to the next top-level comma.
            parts = split_top(balanced_prefix(rest))
            ret = normalize_julia(parts[0])
            tup = parts[1].strip() if len(parts) > 1 else ''
            if not (tup.startswith('(') and tup.endswith(')')):
                params = None  # not a literal tuple: reported as a mismatch
            else:
                params = [normalize_julia(p) for p in split_top(tup[1:-1])]
            self.ccalls.setdefault(m.group(1), []).append((ret, params))
        self.structs = {}
        for m in re.finditer(r'^\s*(?:mutable\s+)?struct\s+(\w+)[^\n]*\n(.*?)^\s*end\b',
                             text, re.S | re.M):
            fields = re.findall(r'^\s*(\w+)\s*::\s*(\S+)', m.group(2), re.M)
            self.structs[m.group(1)] = [(f, normalize_julia(t)) for f, t in fields]
            self.mutable = getattr(self, 'mutable', set())
            if m.group(0).lstrip().startswith('mutable'):
                self.mutable.add(m.group(1))
        self.consts = dict(re.findall(
            r'^\s*const\s+(\w+)\s*=\s*Int32\(\s*(-?\d+)\s*\)', text, re.M))


def balanced_prefix(text):
    """The text up to the ')' closing the ccall."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in '{([':
            depth += 1
        elif ch in '})]':
            if depth == 0:
                return text[:i]
            depth -= 1
    return text


def check(header_text, julia_text, report):
    """Runs every check; report(name, ok, detail) records each one."""
    h = Header(header_text)
    j = Julia(julia_text)
    for name, (ret, params) in sorted(h.functions.items()):
        sites = j.ccalls.get(name, [])
        if not sites:
            report('function ' + name, False, 'no ccall in the Julia file')
            continue
        want_ret = h.julia_types(ret, 'ret')
        want = [h.julia_types(p, 'param') for p in params]
        problems = []
        for got_ret, got in sites:
            if got_ret not in want_ret:
                problems.append('returns %s, C %s wants %s' % (
                    got_ret, ret, '|'.join(sorted(want_ret))))
            if got is None or len(got) != len(want):
                problems.append('%s parameters, C has %d' % (
                    'non-tuple' if got is None else len(got), len(want)))
                continue
            for k, (g, w) in enumerate(zip(got, want)):
                if g not in w:
                    problems.append('parameter %d (%s) is %s, want %s' % (
                        k + 1, params[k], g, '|'.join(sorted(w))))
        report('function ' + name, not problems, '; '.join(problems))
    for name in sorted(set(j.ccalls) - set(h.functions)):
        report('ccall ' + name, False, 'not declared in the header')
    for cname, fields in sorted(h.structs.items()):
        jname = julia_struct_name(cname)
        got = j.structs.get(jname)
        if got is None:
            report('struct ' + cname, False, 'no Julia struct ' + jname)
            continue
        problems = []
        if jname in getattr(j, 'mutable', set()):
            problems.append('mutable (its layout would not be C\'s inline one)')
        if [f for f, _ in got] != [f for f, _ in fields]:
            problems.append('fields %s, C has %s' % (
                [f for f, _ in got], [f for f, _ in fields]))
        else:
            for (fname, ctype), (_, jtype) in zip(fields, got):
                w = h.julia_types(ctype, 'field')
                if jtype not in w:
                    problems.append('%s is %s, want %s' % (fname, jtype, '|'.join(sorted(w))))
        report('struct %s (%s)' % (cname, jname), not problems, '; '.join(problems))
    for name, value in sorted(h.enums.items()):
        got = j.consts.get(name)
        ok = got is not None and int(got) == value
        report('enum ' + name, ok, 'Julia has %s, C has %d' % (
            'nothing' if got is None else 'Int32(%s)' % got, value))
    return len(h.functions)


def mutations(julia_text):
    """(description, mutated text) pairs that a sound checker must reject."""
    out = []
    m = re.search(r'^owl_adamw_lowrank\(.*?\n(?=\S)', julia_text, re.S | re.M)
    if m:
        out.append(('owl_adamw_lowrank binding removed',
                    julia_text[:m.start()] + julia_text[m.end():]))
    out.append(('owl_adamw_create rows as Int64',
                julia_text.replace('(Ptr{Cvoid}, Ptr{AdamwOptions}, UInt64, UInt64,',
                                   '(Ptr{Cvoid}, Ptr{AdamwOptions}, Int64, UInt64,', 1)))
    out.append(('owl_status_name returning Int32',
                julia_text.replace('(:owl_status_name, libowlore), Cstring',
                                   '(:owl_status_name, libowlore), Int32', 1)))
    out.append(('Tensor rows and cols swapped',
                julia_text.replace('    rows::Int64\n    cols::Int64\n',
                                   '    cols::Int64\n    rows::Int64\n', 1)))
    out.append(('EsdResult.xmin_index as Int64',
                julia_text.replace('    xmin_index::UInt64', '    xmin_index::Int64', 1)))
    out.append(('OWL_ERR_SHAPE = Int32(4)',
                julia_text.replace('const OWL_ERR_SHAPE = Int32(3)',
                                   'const OWL_ERR_SHAPE = Int32(4)', 1)))
    out.append(('a ccall of an undeclared function',
                julia_text + '\nowl_nothing() = ccall((:owl_nothing, libowlore), Cvoid, ())\n'))
    return [(d, t) for d, t in out if t != julia_text]


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    header_text = open(argv[1]).read()
    julia_text = open(argv[2]).read()
    passed = failed = 0

    def report(name, ok, detail):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print('FAIL: %s: %s' % (name, detail))

    nfunc = check(header_text, julia_text, report)
    print('checked %d header functions against %s' % (nfunc, argv[2]))
    # The header must really have been parsed: an empty parse checks nothing.
    report('the header declares functions', nfunc > 50, 'only %d found' % nfunc)

    if '--self-test' in argv[3:]:
        muts = mutations(julia_text)
        report('self-test: all mutations applied', len(muts) == 7,
               'only %d of 7 applied to the Julia text' % len(muts))
        baseline = set()
        check(header_text, julia_text,
              lambda n, ok, d: None if ok else baseline.add(n))
        for desc, text in muts:
            # Caught: a check that passes on the real file fails on this one.
            fails = set()
            check(header_text, text, lambda n, ok, d: None if ok else fails.add(n))
            ok = bool(fails - baseline)
            print('%s: self-test, %s' % ('PASS' if ok else 'FAIL', desc))
            report('self-test: ' + desc + ' is caught', ok, 'the checker accepted it')

    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
