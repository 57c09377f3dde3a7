/*
 * The LLaMa example's data module (examples/llama/data.h): the byte
 * tokenizer, text through a BPE tokenizer (closed-form ids), id files (bytes written here by hand, little-endian), the
 * held-out split's sizes, batches (windows of the data, a pure function of
 * seed/step/index), and the synthetic language, whose every sentence is
 * parsed and checked against the rule it follows (sums, differences,
 * copies, reversals, doublings, subject-verb agreement).
 */
#include "common/testutil.h"

#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_byte_round_trip(void **state)
{
    (void)state;
    unsigned char text[256], back[256];
    int32_t ids[256];
    char err[256];
    for (int i = 0; i < 256; i++)
        text[i] = (unsigned char)(255 - i);
    data_encode_bytes(text, 256, ids);
    for (int i = 0; i < 256; i++)
        assert_int_equal(ids[i], 255 - i);
    assert_int_equal(data_decode_bytes(ids, 256, back, err, sizeof err), 0);
    assert_memory_equal(text, back, 256);
    ids[7] = 256;
    assert_int_equal(data_decode_bytes(ids, 256, back, err, sizeof err), -1);
    assert_non_null(strstr(err, "256"));
}

static char *temp_file(const unsigned char *bytes, size_t n)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_llama_data_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    return path;
}

static void test_id_files(void **state)
{
    (void)state;
    char err[256];
    data_ids d;
    /* 16-bit: 1, 258, 65535 */
    const unsigned char b16[] = {1, 0, 2, 1, 0xff, 0xff};
    char *p = temp_file(b16, sizeof b16);
    assert_int_equal(data_load_ids(p, 16, &d, err, sizeof err), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.ids[0], 1);
    assert_int_equal(d.ids[1], 258);
    assert_int_equal(d.ids[2], 65535);
    assert_int_equal(data_max_id(&d), 65535);
    data_free(&d);
    /* The same six bytes as 32-bit ids: not a multiple of 4. */
    assert_int_equal(data_load_ids(p, 32, &d, err, sizeof err), -1);
    assert_non_null(strstr(err, "6 bytes"));
    unlink(p);
    /* 32-bit: 70000 = 0x00011170, 5 */
    const unsigned char b32[] = {0x70, 0x11, 0x01, 0x00, 5, 0, 0, 0};
    p = temp_file(b32, sizeof b32);
    assert_int_equal(data_load_ids(p, 32, &d, err, sizeof err), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.ids[0], 70000);
    assert_int_equal(d.ids[1], 5);
    data_free(&d);
    assert_int_equal(data_load_ids(p, 8, &d, err, sizeof err), -1);
    unlink(p);
    /* An odd byte count for 16-bit ids, and an id above INT32_MAX. */
    const unsigned char odd[] = {1, 0, 2};
    p = temp_file(odd, sizeof odd);
    assert_int_equal(data_load_ids(p, 16, &d, err, sizeof err), -1);
    unlink(p);
    const unsigned char big[] = {0, 0, 0, 0x80};
    p = temp_file(big, sizeof big);
    assert_int_equal(data_load_ids(p, 32, &d, err, sizeof err), -1);
    unlink(p);
    /* A text file is its bytes. */
    const unsigned char txt[] = "hi\n";
    p = temp_file(txt, 3);
    assert_int_equal(data_load_text(p, &d, err, sizeof err), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.ids[0], 'h');
    assert_int_equal(d.ids[2], '\n');
    data_free(&d);
    unlink(p);
    assert_int_equal(data_load_ids("/nonexistent/ids.bin", 16, &d, err,
                                   sizeof err), -1);
}

/* Text through a tokenizer: a vocabulary of the byte symbols of a and b,
 * their merge "ab" and a control token <s> added as bos. "abab\n" is one
 * pre-token "abab" (two merges) and "\n", whose symbol the vocabulary
 * lacks: left out and counted. */
static void test_tokenized_text(void **state)
{
    (void)state;
    const tok_str tokens[] = {{"a", 1}, {"b", 1}, {"ab", 2}, {"<s>", 3}};
    const int32_t types[] = {1, 1, 1, 3};
    const tok_str merges[] = {{"a b", 3}};
    tok_spec spec;
    tok_spec_init(&spec);
    spec.model = "gpt2";
    spec.n_tokens = 4;
    spec.tokens = tokens;
    spec.token_types = types;
    spec.n_merges = 1;
    spec.merges = merges;
    spec.bos_id = 3;
    spec.add_bos = 1;
    tokenizer *tok;
    char err[256];
    assert_int_equal(tok_create(&spec, &tok, err, sizeof err), 0);
    data_ids d;
    size_t bytes = 0, dropped = 0;
    char *p = temp_file((const unsigned char *)"abab\n", 5);
    assert_int_equal(data_load_tokenized(p, tok, &d, &bytes, &dropped, err,
                                         sizeof err), 0);
    assert_int_equal(bytes, 5);
    assert_int_equal(dropped, 1);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.ids[0], 3);
    assert_int_equal(d.ids[1], 2);
    assert_int_equal(d.ids[2], 2);
    data_free(&d);
    unlink(p);
    /* Nothing the vocabulary can represent; nothing at all. */
    p = temp_file((const unsigned char *)"\n\n", 2);
    spec.add_bos = 0;
    tok_free(tok);
    assert_int_equal(tok_create(&spec, &tok, err, sizeof err), 0);
    assert_int_equal(data_load_tokenized(p, tok, &d, NULL, NULL, err,
                                         sizeof err), -1);
    assert_non_null(strstr(err, "no token"));
    unlink(p);
    p = temp_file((const unsigned char *)"", 0);
    assert_int_equal(data_load_tokenized(p, tok, &d, NULL, NULL, err,
                                         sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    unlink(p);
    assert_int_equal(data_load_tokenized("/nonexistent/text.txt", tok, &d,
                                         NULL, NULL, err, sizeof err), -1);
    tok_free(tok);
}

static data_ids counting(size_t n)
{
    data_ids d = {malloc(n * sizeof(int32_t)), n, 1};
    assert_non_null(d.ids);
    for (size_t i = 0; i < n; i++)
        d.ids[i] = (int32_t)i;
    return d;
}

static void test_split(void **state)
{
    (void)state;
    char err[256];
    data_ids all = counting(1000), tr, he;
    assert_int_equal(data_split(&all, 0.1, 10, &tr, &he, err, sizeof err), 0);
    assert_int_equal(tr.n, 900);
    assert_int_equal(he.n, 100);
    assert_int_equal(tr.ids[0], 0);
    assert_int_equal(he.ids[0], 900); /* the held-out part is the end */
    assert_int_equal(he.ids[99], 999);
    assert_int_equal(data_split(&all, 0.25, 10, &tr, &he, err, sizeof err), 0);
    assert_int_equal(he.n, 250);
    assert_int_equal(data_split(&all, 0.0, 10, &tr, &he, err, sizeof err), -1);
    assert_int_equal(data_split(&all, 1.0, 10, &tr, &he, err, sizeof err), -1);
    /* 0.005 * 1000 = 5 ids held out: fewer than one window of 10. */
    assert_int_equal(data_split(&all, 0.005, 10, &tr, &he, err, sizeof err), -1);
    data_free(&all);
}

static void test_batches(void **state)
{
    (void)state;
    char err[256];
    enum { B = 5, T = 7 };
    data_ids d = counting(100);
    int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T];
    assert_int_equal(data_batch(&d, B, T, 42, 3, in, tg, err, sizeof err), 0);
    for (int b = 0; b < B; b++) {
        int32_t start = in[b * T];
        /* A window of T + 1 consecutive ids that fits in the data. */
        assert_true(start >= 0 && start + T < 100);
        for (int t = 0; t < T; t++) {
            assert_int_equal(in[b * T + t], start + t);
            assert_int_equal(tg[b * T + t], start + t + 1);
        }
        /* Its start is the hash of (seed, step, b) mod (n - T). */
        assert_int_equal(start, (int32_t)(data_hash(42, 3, (uint64_t)b) %
                                          (100 - T)));
    }
    /* The same arguments rebuild the same batch, whatever came between. */
    assert_int_equal(data_batch(&d, B, T, 42, 9, in2, tg2, err, sizeof err), 0);
    assert_int_equal(data_batch(&d, B, T, 42, 3, in2, tg2, err, sizeof err), 0);
    assert_memory_equal(in, in2, sizeof in);
    assert_memory_equal(tg, tg2, sizeof tg);
    /* Another step or seed gives other windows. */
    assert_int_equal(data_batch(&d, B, T, 42, 4, in2, tg2, err, sizeof err), 0);
    assert_true(memcmp(in, in2, sizeof in) != 0);
    assert_int_equal(data_batch(&d, B, T, 43, 3, in2, tg2, err, sizeof err), 0);
    assert_true(memcmp(in, in2, sizeof in) != 0);
    /* Too little data for one window; T + 1 ids exactly is one window. */
    data_ids small = {d.ids, T, 0};
    assert_int_equal(data_batch(&small, 1, T, 1, 0, in, tg, err, sizeof err), -1);
    small.n = T + 1;
    assert_int_equal(data_batch(&small, 1, T, 1, 0, in, tg, err, sizeof err), 0);
    assert_int_equal(in[0], 0);
    assert_int_equal(tg[T - 1], T);
    assert_int_equal(data_batch(&d, 0, T, 1, 0, in, tg, err, sizeof err), -1);
    data_free(&d);
}

/* ---- the synthetic language, checked sentence by sentence ---------- */

static const char *const singular[] = {"cat", "dog", "bird", "child", "fox",
                                       "horse", "mouse", "girl"};
static const char *const plural[] = {"cats", "dogs", "birds", "children",
                                     "foxes", "horses", "mice", "girls"};

/* 1 singular noun, 2 plural, 0 not a noun. */
static int noun_number(const char *w)
{
    for (size_t i = 0; i < sizeof singular / sizeof *singular; i++) {
        if (!strcmp(w, singular[i]))
            return 1;
        if (!strcmp(w, plural[i]))
            return 2;
    }
    return 0;
}

/* Checks one agreement sentence given as words in reading order
 * (the base form): the [prep the noun] [verb]. */
static int agreement_ok(char **w, int n)
{
    if (n != 3 && n != 6)
        return 0;
    if (strcmp(w[0], "the") || !noun_number(w[1]))
        return 0;
    if (n == 6 && (strcmp(w[3], "the") || !noun_number(w[4])))
        return 0;
    const char *verb = w[n - 1];
    size_t len = strlen(verb);
    int verb_singular = verb[len - 1] == 's';
    return verb_singular == (noun_number(w[1]) == 1);
}

static int check_line(const char *line, int shifted)
{
    int a, b, c;
    char op, word[32], out[64];
    if (sscanf(line, "%d%c%d=%d.", &a, &op, &b, &c) == 4 &&
        line[strlen(line) - 1] == '.') {
        return shifted ? op == '-' && a >= b && c == a - b
                       : op == '+' && c == a + b;
    }
    if (sscanf(line, "copy %31[a-z]>%63[a-z].", word, out) == 2)
        return !shifted && !strcmp(word, out);
    if (sscanf(line, "rev %31[a-z]>%63[a-z].", word, out) == 2) {
        size_t n = strlen(word);
        int ok = !shifted && strlen(out) == n;
        for (size_t i = 0; ok && i < n; i++)
            ok = out[i] == word[n - 1 - i];
        return ok;
    }
    if (sscanf(line, "dup %31[a-z]>%63[a-z].", word, out) == 2) {
        size_t n = strlen(word);
        int ok = shifted && strlen(out) == 2 * n;
        for (size_t i = 0; ok && i < n; i++)
            ok = out[2 * i] == word[i] && out[2 * i + 1] == word[i];
        return ok;
    }
    /* Words ending in '.', in base or reversed order. */
    char buf[128], *w[16];
    int n = 0;
    size_t len = strlen(line);
    if (len == 0 || len >= sizeof buf || line[len - 1] != '.')
        return 0;
    memcpy(buf, line, len - 1);
    buf[len - 1] = '\0';
    for (char *t = strtok(buf, " "); t && n < 16; t = strtok(NULL, " "))
        w[n++] = t;
    if (shifted)
        for (int i = 0; i < n / 2; i++) {
            char *x = w[i];
            w[i] = w[n - 1 - i];
            w[n - 1 - i] = x;
        }
    return agreement_ok(w, n);
}

/* Every complete line of a corpus follows its variant's rules; counts the
 * lines of each kind so that all kinds are seen. */
static void check_corpus(const data_ids *d, int shifted)
{
    char line[256];
    size_t len = 0, lines = 0, arith = 0, pattern = 0;
    for (size_t i = 0; i < d->n; i++) {
        assert_true(d->ids[i] >= 0 && d->ids[i] < 128);
        if (d->ids[i] != '\n') {
            assert_true(len + 1 < sizeof line);
            line[len++] = (char)d->ids[i];
            continue;
        }
        line[len] = '\0';
        if (!check_line(line, shifted))
            fail_msg("%s line %zu breaks its rule: \"%s\"",
                     shifted ? "shifted" : "base", lines, line);
        arith += strchr(line, '=') != NULL;
        pattern += strchr(line, '>') != NULL;
        lines++;
        len = 0;
    }
    assert_true(lines > 100);
    assert_true(arith > lines / 10 && pattern > lines / 10);
    assert_true(lines - arith - pattern > lines / 4);
}

static void test_synthetic(void **state)
{
    (void)state;
    char err[256];
    data_ids a, b, c, s;
    assert_int_equal(data_synthetic(7, DATA_SYNTH_BASE, 20000, &a, err,
                                    sizeof err), 0);
    assert_int_equal(data_synthetic(7, DATA_SYNTH_BASE, 20000, &b, err,
                                    sizeof err), 0);
    assert_int_equal(data_synthetic(8, DATA_SYNTH_BASE, 20000, &c, err,
                                    sizeof err), 0);
    assert_int_equal(data_synthetic(7, DATA_SYNTH_SHIFTED, 20000, &s, err,
                                    sizeof err), 0);
    assert_int_equal(a.n, 20000);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids); /* deterministic */
    assert_true(memcmp(a.ids, c.ids, a.n * sizeof *a.ids) != 0);
    check_corpus(&a, 0);
    check_corpus(&s, 1);
    data_free(&c);
    assert_int_equal(data_synthetic(7, 2, 100, &c, err, sizeof err), -1);
    data_free(&a);
    data_free(&b);
    data_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_round_trip),
        cmocka_unit_test(test_id_files),
        cmocka_unit_test(test_tokenized_text),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_synthetic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
