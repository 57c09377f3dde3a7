/* Reader for reference-data files written by tests/ref/refdata.py. */
#ifndef OWL_TEST_REFDATA_H
#define OWL_TEST_REFDATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct refarray {
    char *name;
    int kind; /* 0 f64, 1 i64 */
    uint32_t ndim;
    uint64_t dims[8];
    uint64_t count;
    double *f64;  /* kind 0 */
    int64_t *i64; /* kind 1 */
} refarray;

typedef struct refdata {
    refarray *arrays;
    size_t count;
} refdata;

/* Loads a whole file; returns NULL (and prints why) on any error. */
refdata *refdata_load(const char *path);
void refdata_free(refdata *r);
/* The named array, or NULL. */
const refarray *refdata_get(const refdata *r, const char *name);
/* Like refdata_get, but fails the current cmocka test when missing. */
const refarray *refdata_need(const refdata *r, const char *name);
/* Each element converted to float / copied (count elements). */
float *refarray_to_f32(const refarray *a);

#endif
