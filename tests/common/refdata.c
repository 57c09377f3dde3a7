#include "refdata.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_exact(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

refdata *refdata_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "refdata: cannot open %s\n", path);
        return NULL;
    }
    char magic[8];
    if (!read_exact(f, magic, 8) || memcmp(magic, "OWLREF1\n", 8) != 0) {
        fprintf(stderr, "refdata: %s is not a reference file\n", path);
        fclose(f);
        return NULL;
    }
    refdata *r = calloc(1, sizeof *r);
    size_t cap = 0;
    for (;;) {
        uint32_t nlen;
        if (!read_exact(f, &nlen, 4))
            break; /* clean end of file */
        if (r->count == cap) {
            cap = cap ? cap * 2 : 16;
            r->arrays = realloc(r->arrays, cap * sizeof *r->arrays);
        }
        refarray *a = &r->arrays[r->count];
        memset(a, 0, sizeof *a);
        a->name = calloc(nlen + 1, 1);
        uint32_t kind_ndim[2];
        if (nlen > 4096 || !read_exact(f, a->name, nlen) || !read_exact(f, kind_ndim, 8) ||
            kind_ndim[1] > 8)
            goto bad;
        a->kind = (int)kind_ndim[0];
        a->ndim = kind_ndim[1];
        a->count = 1;
        for (uint32_t d = 0; d < a->ndim; d++) {
            if (!read_exact(f, &a->dims[d], 8))
                goto bad;
            a->count *= a->dims[d];
        }
        size_t bytes = (size_t)a->count * 8;
        void *buf = malloc(bytes ? bytes : 8);
        if (!read_exact(f, buf, bytes)) {
            free(buf);
            goto bad;
        }
        if (a->kind == 0)
            a->f64 = buf;
        else
            a->i64 = buf;
        r->count++;
        continue;
    bad:
        fprintf(stderr, "refdata: %s is truncated or malformed\n", path);
        free(a->name);
        fclose(f);
        refdata_free(r);
        return NULL;
    }
    fclose(f);
    return r;
}

void refdata_free(refdata *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->arrays[i].name);
        free(r->arrays[i].f64);
        free(r->arrays[i].i64);
    }
    free(r->arrays);
    free(r);
}

const refarray *refdata_get(const refdata *r, const char *name)
{
    for (size_t i = 0; r && i < r->count; i++)
        if (strcmp(r->arrays[i].name, name) == 0)
            return &r->arrays[i];
    return NULL;
}

const refarray *refdata_need(const refdata *r, const char *name)
{
    const refarray *a = refdata_get(r, name);
    if (!a)
        fail_msg("reference array '%s' is missing", name);
    return a;
}

float *refarray_to_f32(const refarray *a)
{
    float *out = malloc((a->count ? a->count : 1) * sizeof *out);
    for (uint64_t i = 0; i < a->count; i++)
        out[i] = a->kind == 0 ? (float)a->f64[i] : (float)a->i64[i];
    return out;
}
