"""Reference data for tests/test_llama_tokenizer.c: Hugging Face
`tokenizers` (tests/ref/requirements.txt) built from the real vocabulary
of SmolLM2-135M-Instruct, read from its GGUF metadata with `gguf`
(tokenizer.ggml.tokens, .merges, .token_type: byte-level BPE, 49152
tokens, the control tokens as special added tokens), under three
pre-tokenizers:

  smollm     Sequence[Digits(individual_digits), ByteLevel] (SmolLM2's own)
  gpt2       ByteLevel (GPT-2's regex)
  llama-bpe  Sequence[Split(Llama 3's regex, Isolated), ByteLevel(no regex)]

Each is saved as a tokenizer.json, and the ids `tokenizers` gives for
tinyshakespeare (all of it with smollm, its first 100 kB with the others)
and for an edge-case file written here (EDGE_TEXT, EDGE_BYTES) are written
as little-endian int32.

Hugging Face takes only valid text, so the edge file's last lines, which
hold invalid UTF-8, get their reference from its parts: the split of the
pre-tokenizer on the text with U+FFFD in place of each invalid byte (the
C tokenizer treats an invalid byte as a character of that class), then
the BPE model on each piece's true bytes. That route is checked against
`tokenizers`' own encode on the valid text first.

Usage: gen_tokenizer.py GGUF TINYSHAKESPEARE OUTDIR
       gen_tokenizer.py --check MANIFEST_DIR   (see check_saved)

OUTDIR gets the files and two manifests, one case a line (names relative
to OUTDIR): cases.txt, "tokenizer.json text ids"; splits.txt, "pre text
ends", the byte offsets where the pre-tokenizer's pieces end (added tokens
not taken out first), as int32 too. The splits show what the ids cannot:
SmolLM2's vocabulary has no multi-digit tokens, so Llama 3's digit groups
are invisible in its ids.
"""
import os
import sys

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models
from tokenizers import pre_tokenizers as pre
from tokenizers import Regex

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")

# Valid text: one case a line.
EDGE_TEXT = [
    "digits: 0 7 42 123 1234 12345 1234567890 3.14159 1,000,000 0x1F "
    "2024-06-01 v1.2.3 -5 +6 1e10",
    "long number: 3141592653589793238462643383279502884197169399375105820",
    "contractions: I'm you're he's she'll we'd they've it's can't won't",
    "upper: I'M YOU'RE HE'S SHE'LL WE'D THEY'VE IT'S CAN'T DON'T",
    "mixed: I'M you'Re He'S she'LL We'd 'tis 'twas rock'n'roll o'clock "
    "''s '' 's 'S x'sy 'llama 'DD",
    "folds: '\u017f '\u212a 'K",
    "spaces:  two   three    four     five      six",
    "trailing spaces   ",
    "newlines\n\nblank\n\n\n\nfour\r\nwindows\r\n\r\nmac\rold\n \n  \n x",
    "tabs:\tone\t\ttwo\t\t\tthree \t mixed\t \t\n\t\n\t x",
    "unicode spaces: a\u00a0b\u2003c\u3000d\u2028e\u2029f\u0085g\u180eh"
    "\ufeffi\u200bj\u00a0 \u3000\u3000k \u2003",
    # Each space of \s, and look-alikes that are not (U+001C..U+001F,
    # U+180E, U+200B, U+FEFF), after a space and doubled before one:
    # whether it is a space decides both splits.
    "".join("x %sy%s%s z%s" % (c, c, c, c) for c in
            "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2000"
            "\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
            "\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"),
    "controls: \x1c\x1d\x1e\x1f \x0b\x0c \x7f\x01\x02 a\x1fb",
    # Bytes without a symbol in SmolLM2's vocabulary (0x04, 0x1D, 0xF1):
    # left out before the merges, so "!\x1d!" is "!!".
    "no symbol: !\x1d! .\x04. \x04\x06\x13\x14\x16 a\U00040000b",
    "emoji: \U0001F600 \U0001F600\U0001F600 \U0001F44D\U0001F3FD "
    "\U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1EB\U0001F1F7 "
    "\u2764\ufe0f \u2728\U0001F680x",
    "CJK: \u4f60\u597d\uff0c\u4e16\u754c\u3002\u65e5\u672c\u8a9e\u306e"
    "\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3002 "
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \U00020000\U0002A6D6",
    "combining: e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353 "
    "\u0301start x\u0301\u0301y",
    "scripts: \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440. "
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5. "
    "\u0645\u0631\u062d\u0628\u0627 \u0661\u0662\u0663\u0664 "
    "\u05e9\u05dc\u05d5\u05dd \u0939\u093f\u0928\u094d\u0926\u0940 "
    "\u0e51\u0e52\u0e53 \u00b2\u00b3 \u00bd \u216b \u2460 x\u00b2y",
    "NUL: a\x00b\x00\x00 \x00 \x00x",
    "special: <|endoftext|>after <|im_start|>user\nhi<|im_end|>\n"
    "<|im_start|> x<|im_end|><|im_end|> <|endoftext|  <|im_end|>",
    "near special: <|im_start <|endoftext||> <<|im_end|>> "
    "<file_sep><filename>x <jupyter_code>1",
    "code: def f(x):\n    return x**2  # square\n\tif (a&&b) "
    "{c->d[0] += 1;}\n        \n",
    "punct: ... !!! ??? --- ''' \"\"\" ,,, ;;; ::: ((( ))) \u2026 \u00bf? "
    "!a !1 ! !",
    "words: the quick brown fox jumps over the lazy dog. THE QUICK BROWN.",
    "web: e-mail@example.com http://example.com/a?b=c&d=e #tag @user",
    " leading space",
    "   leading spaces",
    "end",
]

# Invalid UTF-8 (and the valid characters around it): lone continuation
# bytes, C0/C1 and F5..FF, truncated sequences, overlong forms,
# surrogates, code points past U+10FFFF.
EDGE_BYTES = [
    b"invalid: \xff\xfe abc\x80def \xc3\x28 \xe2\x82 x\xe2\x82\xac\xe2 "
    b"\xf0\x9f\x98 end",
    b"overlong \xc0\xaf \xe0\x80\xaf surrogate \xed\xa0\x80 beyond "
    b"\xf4\x90\x80\x80 \xf5\xf8\xfc",
    b"\x80\x80\x80 continuations, then \xc2 \xc2\n\xff",
    b"mixed \xffletters\xfe123\xfd 456 \xfc  \xfe\n \xff 'S\xff 1\xff2",
]


def edge_bytes():
    text = "\n".join(EDGE_TEXT).encode("utf-8")
    return text + b"\n" + b"\n".join(EDGE_BYTES)


def bytes_to_unicode():
    """GPT-2's byte-to-character map (its published definition)."""
    keep = (list(range(ord("!"), ord("~") + 1)) +
            list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


B2U = bytes_to_unicode()


def by_parts(tok, data):
    """Ids of data (bytes, invalid UTF-8 allowed, no added tokens) from
    the pre-tokenizer's split and the BPE model, as described above."""
    text = data.decode("utf-8", "surrogateescape")
    spans, pos = [], 0  # the bytes of each character
    for c in text:
        n = 1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8"))
        spans.append((pos, pos + n))
        pos += n
    assert pos == len(data)
    stand_in = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c
                       for c in text)
    ids, covered = [], 0
    for _, (a, b) in tok.pre_tokenizer.pre_tokenize_str(stand_in):
        assert a == covered, "the pieces must tile the text"
        covered = b
        piece = data[spans[a][0]:spans[b - 1][1]]
        mapped = "".join(B2U[x] for x in piece)
        ids += [t.id for t in tok.model.tokenize(mapped)]
    assert covered == len(text)
    return ids


def reference_splits(tok, data):
    """The byte offsets where the pre-tokenizer's pieces of data end (no
    added tokens taken out first), invalid bytes standing in as U+FFFD."""
    text = data.decode("utf-8", "surrogateescape")
    ends, pos = [], 0
    for c in text:
        pos += 1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8"))
        ends.append(pos)
    stand_in = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c
                       for c in text)
    return [ends[b - 1]
            for _, (a, b) in tok.pre_tokenizer.pre_tokenize_str(stand_in)]


def reference_ids(tok, data):
    """The ids of data: `tokenizers`' encode of the valid lines; from the
    first line holding invalid UTF-8 on, by_parts (which must agree with
    encode where both apply, and the split between the two parts must be
    one the tokenizer makes)."""
    try:
        return tok.encode(data.decode("utf-8")).ids
    except UnicodeDecodeError as e:
        cut = data.rfind(b"\n", 0, e.start) + 1
    head, tail = data[:cut], data[cut:]
    stand_in = tail.decode("utf-8", "replace")
    for a in tok.get_added_tokens_decoder().values():
        assert a.content not in stand_in, "added tokens in the invalid part"
    whole = tok.encode(head.decode("utf-8") + stand_in).ids
    parts = (tok.encode(head.decode("utf-8")).ids +
             tok.encode(stand_in).ids)
    assert whole == parts, "the invalid part must start a new piece"
    return tok.encode(head.decode("utf-8")).ids + by_parts(tok, tail)


def check_by_parts(tok, texts):
    """by_parts against `tokenizers`' own encode on valid text."""
    for t in texts:
        got = by_parts(tok, t.encode("utf-8"))
        want = tok.encode(t).ids
        assert got == want, "by_parts differs from encode on %r" % t[:60]


def read_gguf_vocab(path):
    from gguf import GGUFReader
    r = GGUFReader(path)

    def field(name):
        return r.fields[name]

    def strings(name):
        f = field(name)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(name):
        f = field(name)
        return f.parts[f.data[0]][0]

    model = bytes(field("tokenizer.ggml.model").parts[-1]).decode()
    assert model == "gpt2", model
    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    tt = field("tokenizer.ggml.token_type")
    types = [int(tt.parts[i][0]) for i in tt.data]
    assert len(types) == len(tokens)
    return {"tokens": tokens, "merges": merges, "types": types,
            "bos": int(scalar("tokenizer.ggml.bos_token_id")),
            "eos": int(scalar("tokenizer.ggml.eos_token_id"))}


def build(vocab, kind):
    v = {t: i for i, t in enumerate(vocab["tokens"])}
    assert len(v) == len(vocab["tokens"]), "duplicate tokens"
    merges = []
    for m in vocab["merges"]:
        a, b = m.split(" ")
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=v, merges=merges, fuse_unk=False,
                               byte_fallback=False))
    if kind == "smollm":
        tok.pre_tokenizer = pre.Sequence([
            pre.Digits(individual_digits=True),
            pre.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif kind == "gpt2":
        tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False,
                                          use_regex=True)
    elif kind == "llama-bpe":
        tok.pre_tokenizer = pre.Sequence([
            pre.Split(Regex(LLAMA3_REGEX), behavior="isolated",
                      invert=False),
            pre.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        raise ValueError(kind)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(vocab["tokens"], vocab["types"]) if ty == 3]
    tok.add_special_tokens(special)
    for t, ty in zip(vocab["tokens"], vocab["types"]):
        if ty == 3:
            assert tok.token_to_id(t) == v[t]
    return tok


def write_ids(path, ids):
    np.asarray(ids, dtype="<i4").tofile(path)


def main(gguf_path, shakespeare_path, out):
    os.makedirs(out, exist_ok=True)
    vocab = read_gguf_vocab(gguf_path)
    edge = edge_bytes()
    with open(os.path.join(out, "edge.txt"), "wb") as f:
        f.write(edge)
    with open(shakespeare_path, "rb") as f:
        shakespeare = f.read()
    head = shakespeare[:100000]
    with open(os.path.join(out, "shakespeare-100k.txt"), "wb") as f:
        f.write(head)
    # The byte map above is the one `tokenizers` uses.
    assert sorted(B2U.values()) == sorted(pre.ByteLevel.alphabet())
    cases, splits = [], []
    for kind in ("smollm", "gpt2", "llama-bpe"):
        tok = build(vocab, kind)
        name = kind + ".json"
        tok.save(os.path.join(out, name))
        added = [a.content for a in tok.get_added_tokens_decoder().values()]
        plain = [t for t in EDGE_TEXT if not any(a in t for a in added)]
        check_by_parts(tok, plain + [head.decode("utf-8")[:20000]])
        texts = [("edge.txt", edge)]
        if kind == "smollm":
            texts.append((os.path.abspath(shakespeare_path), shakespeare))
        else:
            texts.append(("shakespeare-100k.txt", head))
        for tname, data in texts:
            ids = reference_ids(tok, data)
            if tname != "edge.txt":  # valid text: decode gives it back
                assert tok.decode(ids, skip_special_tokens=False) == \
                    data.decode("utf-8")
            iname = "%s.%s.ids" % (kind, os.path.basename(tname))
            write_ids(os.path.join(out, iname), ids)
            cases.append("%s %s %s" % (name, tname, iname))
        for tname, data in (("edge.txt", edge),
                            ("shakespeare-100k.txt", head)):
            sname = "%s.%s.splits" % (kind, tname)
            write_ids(os.path.join(out, sname), reference_splits(tok, data))
            splits.append("%s %s %s" % (kind, tname, sname))
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(cases) + "\n")
    with open(os.path.join(out, "splits.txt"), "w") as f:
        f.write("\n".join(splits) + "\n")


def check_saved(out):
    """The tokenizer.json files the C test saved (saved-<name> beside each
    case's tokenizer) load in `tokenizers` and give the reference ids."""
    with open(os.path.join(out, "cases.txt")) as f:
        cases = [line.split() for line in f if line.strip()]
    for name, tname, iname in cases:
        saved = os.path.join(out, "saved-" + name)
        tok = Tokenizer.from_file(saved)
        with open(os.path.join(out, tname), "rb") as f:
            data = f.read()
        want = np.fromfile(os.path.join(out, iname), dtype="<i4").tolist()
        got = reference_ids(tok, data)
        assert got == want, "%s differs on %s" % (saved, tname)
        print("ok: %s loads in tokenizers and gives the same %d ids on %s"
              % (os.path.basename(saved), len(want), os.path.basename(tname)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check_saved(sys.argv[2])
    elif len(sys.argv) == 4:
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
