/* Every validation path of the public API (include/owlore/owlore.h):
 * each bad argument returns its documented status, leaves a fresh message
 * on the context that names the argument, and changes nothing: outputs,
 * moments, bases, counters and later results are as if the call had never
 * been made. Each case damages exactly one thing in an otherwise valid
 * call, and every fixture first checks that its undamaged call succeeds. */
#include "common/testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ST(s) (1u << (unsigned)(s))

/* ------------------------------------------------------------------ */
/* Checking one failure                                                */
/* ------------------------------------------------------------------ */

#define MSG_CAP 512

/* Leaves a known message on ctx, so a call that fails without writing
 * its own message is caught (it would leave this one or ""). */
static void prime_message(owl_context *ctx, char *primed)
{
    primed[0] = '\0';
    if (ctx == NULL)
        return;
    static int marker;
    owl_context_set_stream(ctx, &marker); /* a CPU context refuses it */
    snprintf(primed, MSG_CAP, "%s", owl_context_last_error(ctx));
    if (primed[0] == '\0')
        fail_msg("could not leave a message on the context");
}

/* true when msg contains one of the '|'-separated words. */
static bool mentions(const char *msg, const char *words)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", words);
    for (char *w = strtok(buf, "|"); w != NULL; w = strtok(NULL, "|"))
        if (strstr(msg, w) != NULL)
            return true;
    return false;
}

static void names_of(uint32_t allowed, char *out, size_t cap)
{
    out[0] = '\0';
    for (owl_status s = 0; s < 32; s++) {
        if (!(allowed & ST(s)))
            continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? " or " : "",
                 owl_status_name(s));
    }
}

/* The status is one of `allowed`; when ctx is given, its message is new,
 * non-empty and mentions one of `words`. */
static void check_failure(const char *file, int line, const char *expr,
                          owl_context *ctx, const char *primed,
                          owl_status got, uint32_t allowed, const char *words)
{
    char want[256];
    names_of(allowed, want, sizeof want);
    if (got < 0 || got >= 32 || !(allowed & ST(got))) {
        print_error("%s returned %s, expected %s (message: \"%s\")\n", expr,
                    owl_status_name(got), want,
                    ctx ? owl_context_last_error(ctx) : "");
        _fail(file, line);
    }
    if (ctx == NULL)
        return;
    const char *msg = owl_context_last_error(ctx);
    if (msg == NULL || msg[0] == '\0') {
        print_error("%s returned %s with an empty message\n", expr, want);
        _fail(file, line);
    }
    if (strcmp(msg, primed) == 0) {
        print_error("%s returned %s but left the previous message \"%s\"\n",
                    expr, want, msg);
        _fail(file, line);
    }
    if (words != NULL && !mentions(msg, words)) {
        print_error("%s: message \"%s\" does not name %s\n", expr, msg, words);
        _fail(file, line);
    }
}

/* EXPECT_FAIL(ctx, ST(OWL_ERR_SHAPE), "grad", owl_...(...));
 * ctx is the context that receives the message, NULL when there is none
 * (a NULL context or handle). */
#define EXPECT_FAIL(ctx, allowed, words, call)                                 \
    do {                                                                       \
        char primed_[MSG_CAP];                                                 \
        prime_message((ctx), primed_);                                         \
        owl_status got_ = (call);                                              \
        check_failure(__FILE__, __LINE__, #call, (ctx), primed_, got_,         \
                      (allowed), (words));                                     \
    } while (0)

#define EXPECT_OK(ctx, call) assert_owl_ok((ctx), (call))

/* ------------------------------------------------------------------ */
/* Damaging one tensor argument in every generic way                   */
/* ------------------------------------------------------------------ */

typedef owl_status (*call_fn)(void *fx);
/* Returns NULL when nothing changed, else what changed. */
typedef const char *(*unchanged_fn)(void *fx);

typedef struct {
    const char *name;   /* the argument's name, expected in the message */
    owl_tensor **slot;  /* where the call takes the tensor pointer from */
    int32_t bad_dtype;  /* a known dtype this argument refuses, or -1 */
} tensor_arg;

typedef struct {
    const char *what;
    owl_status want;
} defect;

static const defect tensor_defects[] = {
    {"NULL tensor", OWL_ERR_NULL_POINTER},
    {"NULL data", OWL_ERR_NULL_POINTER},
    {"flags = 1", OWL_ERR_INVALID_ARGUMENT},
    {"dtype = 99", OWL_ERR_DTYPE},
    {"dtype = -1", OWL_ERR_DTYPE},
    {"refused dtype", OWL_ERR_DTYPE},
    {"rows = 0", OWL_ERR_SHAPE},
    {"cols = 0", OWL_ERR_SHAPE},
    {"rows = -1", OWL_ERR_SHAPE},
    {"row_stride = cols - 1", OWL_ERR_SHAPE},
};

/* Applies defect i to the argument; false when it does not apply. */
static bool damage(const tensor_arg *arg, size_t i)
{
    owl_tensor *t = *arg->slot;
    switch (i) {
    case 0: *arg->slot = NULL; return true;
    case 1: t->data = NULL; return true;
    case 2: t->flags = 1; return true;
    case 3: t->dtype = 99; return true;
    case 4: t->dtype = -1; return true;
    case 5:
        if (arg->bad_dtype < 0)
            return false;
        t->dtype = arg->bad_dtype;
        return true;
    case 6: t->rows = 0; return true;
    case 7: t->cols = 0; return true;
    case 8: t->rows = -1; return true;
    case 9: t->row_stride = t->cols - 1; return true;
    default: return false;
    }
}

static void check_tensor_arg(const char *file, int line, owl_context *ctx,
                             void *fx, call_fn call, unchanged_fn unchanged,
                             const tensor_arg *arg)
{
    for (size_t i = 0; i < sizeof tensor_defects / sizeof tensor_defects[0]; i++) {
        owl_tensor *saved_ptr = *arg->slot;
        owl_tensor saved = *saved_ptr;
        if (!damage(arg, i))
            continue;
        char primed[MSG_CAP], expr[160];
        prime_message(ctx, primed);
        owl_status got = call(fx);
        *arg->slot = saved_ptr;
        *saved_ptr = saved;
        snprintf(expr, sizeof expr, "call with %s: %s", arg->name,
                 tensor_defects[i].what);
        check_failure(file, line, expr, ctx, primed, got,
                      ST(tensor_defects[i].want), arg->name);
        const char *changed = unchanged(fx);
        if (changed != NULL) {
            print_error("%s failed but changed %s\n", expr, changed);
            _fail(file, line);
        }
    }
}

#define CHECK_TENSOR_ARG(ctx, fx, call, unchanged, name, slot, bad)            \
    do {                                                                       \
        tensor_arg a_ = {(name), (slot), (bad)};                               \
        check_tensor_arg(__FILE__, __LINE__, (ctx), (fx), (call), (unchanged), \
                         &a_);                                                 \
    } while (0)

/* Runs a fixture call with one shape changed and checks the result. */
#define CHECK_CALL(ctx, fx, call, unchanged, allowed, words, what)             \
    do {                                                                       \
        char primed_[MSG_CAP];                                                 \
        prime_message((ctx), primed_);                                         \
        owl_status got_ = (call)(fx);                                          \
        check_failure(__FILE__, __LINE__, what, (ctx), primed_, got_,          \
                      (allowed), (words));                                     \
        const char *changed_ = (unchanged)(fx);                                \
        if (changed_ != NULL)                                                  \
            fail_msg("%s failed but changed %s", what, changed_);              \
    } while (0)

/* Sizes used throughout: a tall weight, so STD projects on the right and
 * the low-rank gradient is M x R. */
enum { M = 12, N = 8, R = 3 };
/* Buffers are larger than any shape we pass, so a library that reads past
 * a rejected tensor's extent does not corrupt the test. */
#define SLACK 8

static const uint16_t BF16_NAN = 0x7FC0, F16_INF = 0x7C00;

static owl_context *ctx_with(int32_t threads) { return test_cpu_context(threads); }

/* ------------------------------------------------------------------ */
/* Getters, enums and options structs                                  */
/* ------------------------------------------------------------------ */

static void test_getters_on_bad_values(void **state)
{
    (void)state;
    assert_string_equal(owl_status_name(-1), "OWL_UNKNOWN");
    assert_string_equal(owl_status_name(18), "OWL_UNKNOWN");
    assert_non_null(owl_status_string(-1));
    assert_true(strlen(owl_status_string(1000)) > 0);
    assert_int_equal(owl_backend_available(-1), 0);
    assert_int_equal(owl_backend_available(2), 0);
    assert_int_equal(owl_backend_available(1000), 0);
    owl_tensor_init(NULL, NULL, OWL_DTYPE_F32, 1, 1); /* never fails */
    assert_int_equal(owl_context_backend(NULL), OWL_BACKEND_CPU);
    assert_true(owl_context_num_threads(NULL) >= 1);
    assert_non_null(owl_context_last_error(NULL));
    assert_int_equal(owl_galore_is_left(NULL), 0);
    assert_int_equal(owl_galore_refresh_count(NULL), 0);
    assert_int_equal(owl_adamw_step_count(NULL), 0);
    assert_int_equal(owl_adamw_bias_step(NULL), 0);
}

static void test_free_accepts_null(void **state)
{
    (void)state;
    owl_context_free(NULL);
    owl_sampler_free(NULL);
    owl_galore_free(NULL);
    owl_adamw_free(NULL);
}

typedef owl_status (*init_fn)(void *opts, uint64_t size);
static owl_status init_context(void *o, uint64_t s) { return owl_context_options_init(o, s); }
static owl_status init_esd(void *o, uint64_t s) { return owl_esd_result_init(o, s); }
static owl_status init_sampler(void *o, uint64_t s) { return owl_sampler_options_init(o, s); }
static owl_status init_galore(void *o, uint64_t s) { return owl_galore_options_init(o, s); }
static owl_status init_adamw(void *o, uint64_t s) { return owl_adamw_options_init(o, s); }

/* Every *_init refuses NULL and impossible sizes without writing a byte,
 * and fills a correct struct_size. */
static void test_options_init_rejects(void **state)
{
    (void)state;
    static const struct { const char *name; init_fn fn; size_t size; } inits[] = {
        {"owl_context_options_init", init_context, sizeof(owl_context_options)},
        {"owl_esd_result_init", init_esd, sizeof(owl_esd_result)},
        {"owl_sampler_options_init", init_sampler, sizeof(owl_sampler_options)},
        {"owl_galore_options_init", init_galore, sizeof(owl_galore_options)},
        {"owl_adamw_options_init", init_adamw, sizeof(owl_adamw_options)},
    };
    /* 12 and 4092 would end inside a field: never a sizeof. */
    static const uint64_t bad_sizes[] = {0, 1, 7, 12, 4092, (uint64_t)1 << 40,
                                         UINT64_MAX};
    for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++) {
        unsigned char buf[512], before[512];
        memset(buf, 0xA5, sizeof buf);
        memcpy(before, buf, sizeof buf);
        owl_status s = inits[i].fn(NULL, inits[i].size);
        if (s != OWL_ERR_NULL_POINTER)
            fail_msg("%s(NULL) returned %s", inits[i].name, owl_status_name(s));
        for (size_t k = 0; k < sizeof bad_sizes / sizeof bad_sizes[0]; k++) {
            s = inits[i].fn(buf, bad_sizes[k]);
            if (s != OWL_ERR_STRUCT_SIZE)
                fail_msg("%s(size %llu) returned %s", inits[i].name,
                         (unsigned long long)bad_sizes[k], owl_status_name(s));
            if (memcmp(buf, before, sizeof buf) != 0)
                fail_msg("%s(size %llu) failed but wrote into the struct",
                         inits[i].name, (unsigned long long)bad_sizes[k]);
        }
        s = inits[i].fn(buf, inits[i].size);
        if (s != OWL_OK)
            fail_msg("%s(valid) returned %s", inits[i].name, owl_status_name(s));
        uint64_t size;
        memcpy(&size, buf, sizeof size);
        assert_int_equal(size, inits[i].size);
        assert_int_equal(buf[inits[i].size], 0xA5); /* nothing past it */
    }
}

/* ------------------------------------------------------------------ */
/* Contexts                                                            */
/* ------------------------------------------------------------------ */

static void expect_no_context(const owl_context_options *o, owl_status want,
                              const char *what)
{
    owl_context *ctx = (owl_context *)&ctx;
    owl_status s = owl_context_create(&ctx, o);
    if (s != want)
        fail_msg("owl_context_create with %s returned %s, expected %s", what,
                 owl_status_name(s), owl_status_name(want));
    if (ctx != NULL)
        fail_msg("owl_context_create with %s failed but left *out set", what);
}

static void test_context_rejects(void **state)
{
    (void)state;
    assert_int_equal(owl_context_create(NULL, NULL), OWL_ERR_NULL_POINTER);
    owl_context_options o;
    owl_context_options_init(&o, sizeof o);
    assert_int_equal(owl_context_create(NULL, &o), OWL_ERR_NULL_POINTER);

#define BAD_CONTEXT(field, value, want)                                        \
    do {                                                                       \
        owl_context_options_init(&o, sizeof o);                                \
        o.field = (value);                                                     \
        expect_no_context(&o, (want), #field " = " #value);                    \
    } while (0)
    BAD_CONTEXT(struct_size, 0, OWL_ERR_STRUCT_SIZE);
    BAD_CONTEXT(struct_size, 4, OWL_ERR_STRUCT_SIZE);
    BAD_CONTEXT(struct_size, UINT64_MAX, OWL_ERR_STRUCT_SIZE);
    BAD_CONTEXT(backend, -1, OWL_ERR_INVALID_ARGUMENT);
    BAD_CONTEXT(backend, 2, OWL_ERR_INVALID_ARGUMENT);
    BAD_CONTEXT(device, -1, OWL_ERR_INVALID_ARGUMENT);
    BAD_CONTEXT(num_threads, -1, OWL_ERR_INVALID_ARGUMENT);
    BAD_CONTEXT(reserved, 1, OWL_ERR_INVALID_ARGUMENT);
    if (!owl_backend_available(OWL_BACKEND_CUDA))
        BAD_CONTEXT(backend, OWL_BACKEND_CUDA, OWL_ERR_UNSUPPORTED);
#undef BAD_CONTEXT

    /* A newer caller's struct: unknown fields must be zero. */
    struct { owl_context_options o; uint64_t future; } newer;
    owl_context_options_init(&newer.o, sizeof newer);
    newer.future = 1;
    expect_no_context(&newer.o, OWL_ERR_STRUCT_SIZE, "a non-zero unknown field");

    assert_int_equal(owl_context_set_stream(NULL, NULL), OWL_ERR_NULL_POINTER);
    owl_context *ctx = ctx_with(1);
    /* (The other cases use this very failure to prime the message.) */
    int stream;
    assert_int_equal(owl_context_set_stream(ctx, &stream), OWL_ERR_UNSUPPORTED);
    assert_non_null(strstr(owl_context_last_error(ctx), "stream"));
    owl_context_free(ctx);
}

/* ------------------------------------------------------------------ */
/* owl_act_norm_accumulate                                             */
/* ------------------------------------------------------------------ */

enum { XT = 5, XN = 4 };

typedef struct {
    owl_context *ctx;
    float x[XT * XN * SLACK];
    double sumsq[XN * SLACK];
    double sumsq_before[XN * SLACK];
    owl_tensor xt, st;
    owl_tensor *px, *ps;
} act_fx;

static owl_status act_call(void *p)
{
    act_fx *f = p;
    return owl_act_norm_accumulate(f->ctx, f->px, f->ps);
}

static const char *act_unchanged(void *p)
{
    act_fx *f = p;
    return memcmp(f->sumsq, f->sumsq_before, sizeof f->sumsq) ? "sumsq" : NULL;
}

static void test_act_norm_rejects(void **state)
{
    (void)state;
    static act_fx f;
    memset(&f, 0, sizeof f);
    f.ctx = ctx_with(2);
    test_fill_uniform(f.x, XT * XN, 11);
    for (int j = 0; j < XN; j++)
        f.sumsq[j] = j + 1.0;
    owl_tensor_init(&f.xt, f.x, OWL_DTYPE_F32, XT, XN);
    owl_tensor_init(&f.st, f.sumsq, OWL_DTYPE_F64, 1, XN);
    f.px = &f.xt;
    f.ps = &f.st;
    EXPECT_OK(f.ctx, act_call(&f));
    memcpy(f.sumsq_before, f.sumsq, sizeof f.sumsq);

    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_act_norm_accumulate(NULL, f.px, f.ps));
    CHECK_TENSOR_ARG(f.ctx, &f, act_call, act_unchanged, "x", &f.px,
                     OWL_DTYPE_F64);
    CHECK_TENSOR_ARG(f.ctx, &f, act_call, act_unchanged, "sumsq", &f.ps,
                     OWL_DTYPE_BF16);
    f.st.dtype = OWL_DTYPE_F16; /* f32 or f64 only */
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_DTYPE), "sumsq",
               "sumsq as f16");
    f.st.dtype = OWL_DTYPE_F64;

    /* sumsq must be 1 x n for x's n. */
    f.st.cols = XN + 1;
    f.st.row_stride = XN + 1;
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_SHAPE),
               "sumsq|x", "sumsq with n + 1 columns");
    f.st.cols = XN - 1;
    f.st.row_stride = XN - 1;
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_SHAPE),
               "sumsq|x", "sumsq with n - 1 columns");
    owl_tensor_init(&f.st, f.sumsq, OWL_DTYPE_F64, 2, XN);
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_SHAPE), "sumsq",
               "sumsq with 2 rows");
    owl_tensor_init(&f.st, f.sumsq, OWL_DTYPE_F64, 1, XN);

    /* A NaN or Inf activation would poison the running statistic. */
    f.x[7] = NAN;
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_NONFINITE), "x",
               "x holding a NaN");
    f.x[7] = INFINITY;
    CHECK_CALL(f.ctx, &f, act_call, act_unchanged, ST(OWL_ERR_NONFINITE), "x",
               "x holding an Inf");
    f.x[7] = 0.5f;
    owl_context_free(f.ctx);
}

/* ------------------------------------------------------------------ */
/* owl_lod_compute                                                     */
/* ------------------------------------------------------------------ */

typedef struct {
    owl_context *ctx;
    float w0[6 * 4 * SLACK], w1[3 * 5 * SLACK];
    double s0[4 * SLACK];
    float s1[5 * SLACK];
    owl_tensor weights[2], sumsq[2];
    const owl_tensor *pw, *ps;
    uint64_t count;
    double m;
    double ratio;
    double *pratio;
} lod_fx;

static owl_status lod_call(void *p)
{
    lod_fx *f = p;
    return owl_lod_compute(f->ctx, f->pw, f->ps, f->count, f->m, f->pratio);
}

static const char *lod_unchanged(void *p)
{
    lod_fx *f = p;
    return f->ratio == -7.0 ? NULL : "*ratio";
}

static void test_lod_rejects(void **state)
{
    (void)state;
    static lod_fx f;
    memset(&f, 0, sizeof f);
    f.ctx = ctx_with(2);
    test_fill_normal(f.w0, 6 * 4, 21);
    test_fill_normal(f.w1, 3 * 5, 22);
    for (int j = 0; j < 4; j++)
        f.s0[j] = 1.0 + j;
    for (int j = 0; j < 5; j++)
        f.s1[j] = 2.0f + (float)j;
    owl_tensor_init(&f.weights[0], f.w0, OWL_DTYPE_F32, 6, 4);
    owl_tensor_init(&f.weights[1], f.w1, OWL_DTYPE_F32, 3, 5);
    owl_tensor_init(&f.sumsq[0], f.s0, OWL_DTYPE_F64, 1, 4);
    owl_tensor_init(&f.sumsq[1], f.s1, OWL_DTYPE_F32, 1, 5);
    f.pw = f.weights;
    f.ps = f.sumsq;
    f.count = 2;
    f.m = 1.5;
    f.pratio = &f.ratio;
    EXPECT_OK(f.ctx, lod_call(&f));
    assert_true(f.ratio >= 0.0 && f.ratio <= 1.0);
    f.ratio = -7.0;

    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_lod_compute(NULL, f.pw, f.ps, 2, 1.5, &f.ratio));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "weights",
                owl_lod_compute(f.ctx, NULL, f.ps, 2, 1.5, &f.ratio));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "input_sumsq",
                owl_lod_compute(f.ctx, f.pw, NULL, 2, 1.5, &f.ratio));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "ratio",
                owl_lod_compute(f.ctx, f.pw, f.ps, 2, 1.5, NULL));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "count",
                owl_lod_compute(f.ctx, f.pw, f.ps, 0, 1.5, &f.ratio));
    static const double bad_m[] = {0.0, -1.0, -0.0};
    for (size_t i = 0; i < 3; i++)
        EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "M",
                    owl_lod_compute(f.ctx, f.pw, f.ps, 2, bad_m[i], &f.ratio));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "M",
                owl_lod_compute(f.ctx, f.pw, f.ps, 2, NAN, &f.ratio));
    assert_true(f.ratio == -7.0);

    /* The second element of each array is validated too. Its tensor is
     * damaged in place through a pointer slot that aliases it. */
    owl_tensor *w1 = &f.weights[1], *s1 = &f.sumsq[1];
    tensor_arg aw = {"weights", &w1, OWL_DTYPE_F64};
    tensor_arg as = {"input_sumsq", &s1, OWL_DTYPE_BF16};
    for (size_t i = 1; i < sizeof tensor_defects / sizeof tensor_defects[0]; i++) {
        const tensor_arg *args[2] = {&aw, &as};
        for (int k = 0; k < 2; k++) {
            owl_tensor saved = **args[k]->slot;
            if (!damage(args[k], i))
                continue;
            char primed[MSG_CAP], what[128];
            prime_message(f.ctx, primed);
            owl_status got = lod_call(&f);
            **args[k]->slot = saved;
            snprintf(what, sizeof what, "%s[1] with %s", args[k]->name,
                     tensor_defects[i].what);
            check_failure(__FILE__, __LINE__, what, f.ctx, primed, got,
                          ST(tensor_defects[i].want), args[k]->name);
            if (lod_unchanged(&f))
                fail_msg("%s failed but wrote *ratio", what);
        }
    }
    f.sumsq[1].dtype = OWL_DTYPE_F16;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_DTYPE),
               "input_sumsq", "input_sumsq[1] as f16");
    f.sumsq[1].dtype = OWL_DTYPE_F32;

    /* input_sumsq[k] must be 1 x n_k. */
    f.sumsq[1].cols = 4;
    f.sumsq[1].row_stride = 4;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_SHAPE),
               "input_sumsq|weights", "input_sumsq[1] 1x4 for a 3x5 weight");
    owl_tensor_init(&f.sumsq[1], f.s1, OWL_DTYPE_F32, 2, 5);
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_SHAPE),
               "input_sumsq", "input_sumsq[1] with 2 rows");
    owl_tensor_init(&f.sumsq[1], f.s1, OWL_DTYPE_F32, 1, 5);

    /* Non-finite inputs and a negative sum of squares. */
    f.w1[4] = NAN;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_NONFINITE),
               "weights", "weights[1] holding a NaN");
    f.w1[4] = -INFINITY;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_NONFINITE),
               "weights", "weights[1] holding an Inf");
    f.w1[4] = 0.25f;
    f.s0[2] = NAN;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged, ST(OWL_ERR_NONFINITE),
               "input_sumsq", "input_sumsq[0] holding a NaN");
    f.s0[2] = -1.0;
    CHECK_CALL(f.ctx, &f, lod_call, lod_unchanged,
               ST(OWL_ERR_INVALID_ARGUMENT), "input_sumsq",
               "input_sumsq[0] holding a negative sum of squares");
    f.s0[2] = 3.0;
    EXPECT_OK(f.ctx, lod_call(&f));
    owl_context_free(f.ctx);
}

/* ------------------------------------------------------------------ */
/* owl_esd_alpha_hill, owl_esd_alpha_hill_eigs                         */
/* ------------------------------------------------------------------ */

typedef struct {
    owl_context *ctx;
    float w[10 * 6 * SLACK];
    owl_tensor wt;
    owl_tensor *pw;
    owl_xmin_method method;
    owl_esd_result result, before;
    owl_esd_result *pres;
} esd_fx;

static owl_status esd_call(void *p)
{
    esd_fx *f = p;
    return owl_esd_alpha_hill(f->ctx, f->pw, f->method, f->pres);
}

static const char *esd_unchanged(void *p)
{
    esd_fx *f = p;
    return memcmp(&f->result, &f->before, sizeof f->result) ? "*result" : NULL;
}

static void fill_result_sentinel(owl_esd_result *r)
{
    owl_esd_result_init(r, sizeof *r);
    r->alpha = -1.0;
    r->xmin = -2.0;
    r->ks_distance = -3.0;
    r->xmin_index = 77;
    r->num_eigs = 88;
}

static void test_esd_rejects(void **state)
{
    (void)state;
    static esd_fx f;
    memset(&f, 0, sizeof f);
    f.ctx = ctx_with(2);
    test_fill_normal(f.w, 10 * 6, 31);
    owl_tensor_init(&f.wt, f.w, OWL_DTYPE_F32, 10, 6);
    f.pw = &f.wt;
    f.method = OWL_XMIN_FIX_FINGER;
    owl_esd_result_init(&f.result, sizeof f.result);
    f.pres = &f.result;
    EXPECT_OK(f.ctx, esd_call(&f));
    fill_result_sentinel(&f.result);
    f.before = f.result;

    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_esd_alpha_hill(NULL, f.pw, 0, &f.result));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "result",
                owl_esd_alpha_hill(f.ctx, f.pw, 0, NULL));
    CHECK_TENSOR_ARG(f.ctx, &f, esd_call, esd_unchanged, "weight", &f.pw, -1);
    static const owl_xmin_method bad_methods[] = {-1, 3, 1000};
    for (size_t i = 0; i < 3; i++) {
        f.method = bad_methods[i];
        CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged,
                   ST(OWL_ERR_INVALID_ARGUMENT), "method", "a bad method");
    }
    f.method = OWL_XMIN_MEDIAN;
    f.result.struct_size = 0;
    f.before = f.result;
    CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged, ST(OWL_ERR_STRUCT_SIZE),
               "struct_size|result", "result->struct_size = 0");
    f.result.struct_size = UINT64_MAX;
    f.before = f.result;
    CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged, ST(OWL_ERR_STRUCT_SIZE),
               "struct_size|result", "result->struct_size = UINT64_MAX");
    fill_result_sentinel(&f.result);
    f.before = f.result;
    f.w[13] = NAN;
    CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged, ST(OWL_ERR_NONFINITE),
               "weight", "weight holding a NaN");
    f.w[13] = INFINITY;
    CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged, ST(OWL_ERR_NONFINITE),
               "weight", "weight holding an Inf");
    f.w[13] = 0.5f;
    /* A single row has one singular value: no tail to fit. */
    owl_tensor_init(&f.wt, f.w, OWL_DTYPE_F32, 1, 6);
    CHECK_CALL(f.ctx, &f, esd_call, esd_unchanged,
               ST(OWL_ERR_SHAPE) | ST(OWL_ERR_INVALID_ARGUMENT), "weight",
               "a 1 x 6 weight");
    owl_tensor_init(&f.wt, f.w, OWL_DTYPE_F32, 10, 6);

    /* From eigenvalues. */
    double eigs[6] = {0.5, 1.0, 2.0, 4.0, 8.0, 16.0};
    owl_esd_result r;
    EXPECT_OK(f.ctx, owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 0, &f.result));
    fill_result_sentinel(&f.result);
    f.before = f.result;
    r = f.result;
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_esd_alpha_hill_eigs(NULL, eigs, 6, 0, &r));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "eigenvalues",
                owl_esd_alpha_hill_eigs(f.ctx, NULL, 6, 0, &r));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "result",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 0, NULL));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "count",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 0, 0, &r));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "count",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 1, 0, &r));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "method",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 3, &r));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "method",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, -1, &r));
    r.struct_size = 3;
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_STRUCT_SIZE), "struct_size|result",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 0, &r));
    r.struct_size = sizeof r;
    assert_memory_equal(&r, &f.before, sizeof r);
    /* Non-positive values are ignored: fewer than two left is an error. */
    double few[4] = {0.0, -1.0, 3.0, -0.0};
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "eigenvalues|positive",
                owl_esd_alpha_hill_eigs(f.ctx, few, 4, 0, &r));
    eigs[3] = NAN;
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NONFINITE), "eigenvalues",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 0, &r));
    eigs[3] = INFINITY;
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NONFINITE), "eigenvalues",
                owl_esd_alpha_hill_eigs(f.ctx, eigs, 6, 0, &r));
    assert_memory_equal(&r, &f.before, sizeof r);
    owl_context_free(f.ctx);
}

/* ------------------------------------------------------------------ */
/* Sampler                                                             */
/* ------------------------------------------------------------------ */

static void valid_sampler_options(owl_sampler_options *o, const double *w)
{
    owl_sampler_options_init(o, sizeof *o);
    o->num_layers = 6;
    o->gamma = 2;
    o->period = 4;
    o->seed = 5;
    o->weight_mode = OWL_WEIGHTS_CUSTOM;
    o->law = OWL_DRAW_SYSTEMATIC;
    o->weights = w;
}

static void expect_no_sampler(const char *file, int line, owl_context *ctx,
                              const owl_sampler_options *o, uint32_t allowed,
                              const char *words, const char *what)
{
    owl_sampler *out = (owl_sampler *)&out;
    char primed[MSG_CAP];
    prime_message(ctx, primed);
    owl_status s = owl_sampler_create(ctx, o, &out);
    check_failure(file, line, what, ctx, primed, s, allowed, words);
    if (out != NULL) {
        print_error("%s failed but left *out set\n", what);
        _fail(file, line);
    }
}

static void test_sampler_create_rejects(void **state)
{
    (void)state;
    owl_context *ctx = ctx_with(1);
    double w[6] = {1, 2, 3, 4, 5, 6};
    owl_sampler_options o;
    owl_sampler *s = NULL;
    valid_sampler_options(&o, w);
    EXPECT_OK(ctx, owl_sampler_create(ctx, &o, &s));
    owl_sampler_free(s);

    s = (owl_sampler *)&s;
    assert_int_equal(owl_sampler_create(NULL, &o, &s), OWL_ERR_NULL_POINTER);
    if (s != NULL)
        fail_msg("owl_sampler_create with a NULL context failed but left *out set");
    EXPECT_FAIL(ctx, ST(OWL_ERR_NULL_POINTER), "out",
                owl_sampler_create(ctx, &o, NULL));
    expect_no_sampler(__FILE__, __LINE__, ctx, NULL, ST(OWL_ERR_NULL_POINTER),
                      "opts", "NULL opts");

#define BAD_SAMPLER(field, value, allowed, words)                              \
    do {                                                                       \
        valid_sampler_options(&o, w);                                          \
        o.field = (value);                                                     \
        expect_no_sampler(__FILE__, __LINE__, ctx, &o, (allowed), (words),     \
                          #field " = " #value);                                \
    } while (0)
    BAD_SAMPLER(struct_size, 0, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    BAD_SAMPLER(struct_size, UINT64_MAX, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    /* Ends inside the weights pointer: half of it would be read. */
    BAD_SAMPLER(struct_size, sizeof(owl_sampler_options) - 4,
                ST(OWL_ERR_STRUCT_SIZE), "multiples of 8");
    BAD_SAMPLER(num_layers, 0, ST(OWL_ERR_INVALID_ARGUMENT), "num_layers");
    BAD_SAMPLER(gamma, 0, ST(OWL_ERR_INVALID_ARGUMENT), "gamma");
    BAD_SAMPLER(gamma, 7, ST(OWL_ERR_INVALID_ARGUMENT), "gamma");
    BAD_SAMPLER(period, 0, ST(OWL_ERR_INVALID_ARGUMENT), "period");
    BAD_SAMPLER(weight_mode, -1, ST(OWL_ERR_INVALID_ARGUMENT), "weight_mode");
    BAD_SAMPLER(weight_mode, 5, ST(OWL_ERR_INVALID_ARGUMENT), "weight_mode");
    BAD_SAMPLER(law, -1, ST(OWL_ERR_INVALID_ARGUMENT), "law");
    BAD_SAMPLER(law, 3, ST(OWL_ERR_INVALID_ARGUMENT), "law");
    BAD_SAMPLER(weights, NULL, ST(OWL_ERR_NULL_POINTER), "weights");
    valid_sampler_options(&o, NULL);
    o.weight_mode = OWL_WEIGHTS_OWLORE;
    expect_no_sampler(__FILE__, __LINE__, ctx, &o, ST(OWL_ERR_NULL_POINTER),
                      "weights", "OWLORE without weights");
    /* Modes that compute their own weights take none. */
    BAD_SAMPLER(weight_mode, OWL_WEIGHTS_UNIFORM, ST(OWL_ERR_INVALID_ARGUMENT),
                "weights");
    BAD_SAMPLER(weight_mode, OWL_WEIGHTS_DECREASING,
                ST(OWL_ERR_INVALID_ARGUMENT), "weights");

    /* Weights: finite, >= 0, at least gamma of them positive. */
    static const double bad[][6] = {
        {1, 2, -3, 4, 5, 6},        /* negative */
        {0, 0, 0, 0, 0, 0},         /* all zero */
        {0, 0, 0, 0.5, 0, 0},       /* fewer than gamma positive */
        {1, 2, NAN, 4, 5, 6},       /* NaN */
        {1, 2, INFINITY, 4, 5, 6},  /* Inf */
        {1, 2, -0.5, 4, 5, 6},      /* negative again, in OWLORE mode */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        valid_sampler_options(&o, bad[i]);
        if (i == 5)
            o.weight_mode = OWL_WEIGHTS_OWLORE;
        uint32_t allowed = ST(OWL_ERR_INVALID_ARGUMENT);
        if (i == 3 || i == 4)
            allowed |= ST(OWL_ERR_NONFINITE);
        char what[64];
        snprintf(what, sizeof what, "bad weights #%zu", i);
        expect_no_sampler(__FILE__, __LINE__, ctx, &o, allowed, "weights", what);
    }
#undef BAD_SAMPLER

    struct { owl_sampler_options o; uint64_t future; } newer;
    valid_sampler_options(&newer.o, w);
    newer.o.struct_size = sizeof newer;
    newer.future = 3;
    expect_no_sampler(__FILE__, __LINE__, ctx, &newer.o,
                      ST(OWL_ERR_STRUCT_SIZE), NULL, "a non-zero unknown field");
    owl_context_free(ctx);
}

static void test_sampler_calls_reject(void **state)
{
    (void)state;
    owl_context *ctx = ctx_with(1);
    double w[6] = {1, 2, 3, 4, 5, 6};
    owl_sampler_options o;
    valid_sampler_options(&o, w);
    owl_sampler *s = NULL;
    EXPECT_OK(ctx, owl_sampler_create(ctx, &o, &s));
    uint8_t mask[6];
    uint64_t active = 99;
    int32_t resampled = 99;
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_sampler_step(NULL, 0, mask, &active, &resampled));
    EXPECT_FAIL(ctx, ST(OWL_ERR_NULL_POINTER), "mask",
                owl_sampler_step(s, 0, NULL, &active, &resampled));
    assert_int_equal(active, 99);
    assert_int_equal(resampled, 99);
    /* The optional outputs may be NULL. */
    EXPECT_OK(ctx, owl_sampler_step(s, 0, mask, NULL, NULL));
    EXPECT_OK(ctx, owl_sampler_step(s, UINT64_MAX, mask, NULL, NULL));

    double p[6], pi[6];
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_sampler_probabilities(NULL, p, pi));
    EXPECT_OK(ctx, owl_sampler_probabilities(s, NULL, NULL));
    EXPECT_OK(ctx, owl_sampler_probabilities(s, p, NULL));
    EXPECT_OK(ctx, owl_sampler_probabilities(s, NULL, pi));
    owl_sampler_free(s);
    owl_context_free(ctx);
}

/* ------------------------------------------------------------------ */
/* GaLore projector                                                    */
/* ------------------------------------------------------------------ */

static void valid_galore_options(owl_galore_options *o)
{
    owl_galore_options_init(o, sizeof *o);
    o->rows = M;
    o->cols = N;
    o->rank = R;
    o->update_gap = 3;
    o->scale = 0.5;
}

static void expect_no_galore(const char *file, int line, owl_context *ctx,
                             const owl_galore_options *o, uint32_t allowed,
                             const char *words, const char *what)
{
    owl_galore *out = (owl_galore *)&out;
    char primed[MSG_CAP];
    prime_message(ctx, primed);
    owl_status s = owl_galore_create(ctx, o, &out);
    check_failure(file, line, what, ctx, primed, s, allowed, words);
    if (out != NULL) {
        print_error("%s failed but left *out set\n", what);
        _fail(file, line);
    }
}

static void test_galore_create_rejects(void **state)
{
    (void)state;
    owl_context *ctx = ctx_with(1);
    owl_galore_options o;
    owl_galore *g = NULL;
    valid_galore_options(&o);
    EXPECT_OK(ctx, owl_galore_create(ctx, &o, &g));
    owl_galore_free(g);
    o.rank = N; /* r = min(m, n) is allowed */
    EXPECT_OK(ctx, owl_galore_create(ctx, &o, &g));
    owl_galore_free(g);

    g = (owl_galore *)&g;
    valid_galore_options(&o);
    assert_int_equal(owl_galore_create(NULL, &o, &g), OWL_ERR_NULL_POINTER);
    if (g != NULL)
        fail_msg("owl_galore_create with a NULL context failed but left *out set");
    EXPECT_FAIL(ctx, ST(OWL_ERR_NULL_POINTER), "out",
                owl_galore_create(ctx, &o, NULL));
    expect_no_galore(__FILE__, __LINE__, ctx, NULL, ST(OWL_ERR_NULL_POINTER),
                     "opts", "NULL opts");

    const uint32_t dims = ST(OWL_ERR_INVALID_ARGUMENT) | ST(OWL_ERR_SHAPE);
#define BAD_GALORE(field, value, allowed, words)                               \
    do {                                                                       \
        valid_galore_options(&o);                                              \
        o.field = (value);                                                     \
        expect_no_galore(__FILE__, __LINE__, ctx, &o, (allowed), (words),      \
                         #field " = " #value);                                 \
    } while (0)
    BAD_GALORE(struct_size, 0, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    BAD_GALORE(struct_size, UINT64_MAX, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    BAD_GALORE(rows, 0, dims, "rows");
    BAD_GALORE(cols, 0, dims, "cols");
    /* Too large to address, or for the backend's BLAS/LAPACK (32-bit
     * dimensions): either way no projector. */
    BAD_GALORE(rows, UINT64_MAX,
               dims | ST(OWL_ERR_OUT_OF_MEMORY) | ST(OWL_ERR_UNSUPPORTED), "rows");
    BAD_GALORE(rank, 0, ST(OWL_ERR_INVALID_ARGUMENT), "rank");
    BAD_GALORE(rank, N + 1, ST(OWL_ERR_INVALID_ARGUMENT), "rank");
    BAD_GALORE(update_gap, 0, ST(OWL_ERR_INVALID_ARGUMENT), "update_gap");
    BAD_GALORE(scale, 0.0, ST(OWL_ERR_INVALID_ARGUMENT), "scale");
    BAD_GALORE(scale, -0.25, ST(OWL_ERR_INVALID_ARGUMENT), "scale");
    BAD_GALORE(scale, NAN, ST(OWL_ERR_INVALID_ARGUMENT), "scale");
    BAD_GALORE(proj_type, -1, ST(OWL_ERR_INVALID_ARGUMENT), "proj_type");
    BAD_GALORE(proj_type, 4, ST(OWL_ERR_INVALID_ARGUMENT), "proj_type");
    BAD_GALORE(svd_method, -1, ST(OWL_ERR_INVALID_ARGUMENT), "svd_method");
    BAD_GALORE(svd_method, 2, ST(OWL_ERR_INVALID_ARGUMENT), "svd_method");
#undef BAD_GALORE
    /* The reference's reverse_std case: a 64 x 256 gradient at r = 128. */
    valid_galore_options(&o);
    o.rows = 64;
    o.cols = 256;
    o.rank = 128;
    o.proj_type = OWL_PROJ_REVERSE_STD;
    expect_no_galore(__FILE__, __LINE__, ctx, &o, ST(OWL_ERR_INVALID_ARGUMENT),
                     "rank", "reverse_std 64x256 at r = 128");
    owl_context_free(ctx);
}

typedef struct {
    owl_context *ctx;
    owl_galore *proj;
    uint64_t iter;
    float grad[M * N * SLACK];
    float out[M * N * SLACK], out_before[M * N * SLACK];
    owl_tensor gt, ot;
    owl_tensor *pg, *po;
    int32_t refreshed;
    bool has_basis;
    float basis[R * N];
    uint64_t refreshes;
} proj_fx;

static owl_status project_call(void *p)
{
    proj_fx *f = p;
    return owl_galore_project(f->proj, f->iter, f->pg, f->po, &f->refreshed);
}

static owl_status refresh_call(void *p)
{
    proj_fx *f = p;
    return owl_galore_refresh(f->proj, f->pg);
}

static owl_status back_call(void *p)
{
    proj_fx *f = p;
    return owl_galore_project_back(f->proj, f->pg, f->po);
}

static owl_status basis_call(void *p)
{
    proj_fx *f = p;
    return owl_galore_get_basis(f->proj, f->po);
}

/* What a failed call must leave alone: the output buffer, the refresh
 * flag, the refresh count and the basis (or its absence). */
static const char *proj_unchanged(void *p)
{
    proj_fx *f = p;
    if (memcmp(f->out, f->out_before, sizeof f->out) != 0)
        return "the output tensor";
    if (f->refreshed != 42)
        return "*refreshed";
    if (owl_galore_refresh_count(f->proj) != f->refreshes)
        return "the refresh count";
    float basis[R * N];
    owl_tensor bt;
    owl_tensor_init(&bt, basis, OWL_DTYPE_F32, R, N);
    owl_status s = owl_galore_get_basis(f->proj, &bt);
    if (!f->has_basis)
        return s == OWL_ERR_STATE ? NULL : "the projector: it now has a basis";
    if (s != OWL_OK)
        return "the projector: its basis cannot be read";
    return memcmp(basis, f->basis, sizeof basis) ? "the basis" : NULL;
}

static void proj_snapshot(proj_fx *f)
{
    memcpy(f->out_before, f->out, sizeof f->out);
    f->refreshed = 42;
    f->refreshes = owl_galore_refresh_count(f->proj);
    owl_tensor bt;
    owl_tensor_init(&bt, f->basis, OWL_DTYPE_F32, R, N);
    f->has_basis = owl_galore_get_basis(f->proj, &bt) == OWL_OK;
}

static void proj_tensors(proj_fx *f, int64_t grows, int64_t gcols,
                         int64_t orows, int64_t ocols)
{
    owl_tensor_init(&f->gt, f->grad, OWL_DTYPE_F32, grows, gcols);
    owl_tensor_init(&f->ot, f->out, OWL_DTYPE_F32, orows, ocols);
    f->pg = &f->gt;
    f->po = &f->ot;
}

/* The bad-shape cases of one call: each tensor transposed or off by one. */
static void check_proj_shapes(proj_fx *f, call_fn call, const char *gname,
                              int64_t gr, int64_t gc, const char *oname,
                              int64_t orr, int64_t oc)
{
    const int64_t shapes[4][2] = {{gc, gr}, {gr + 1, gc}, {gr, gc + 1}, {gr - 1, gc}};
    for (int k = 0; k < 4; k++) {
        if (shapes[k][0] == gr && shapes[k][1] == gc)
            continue;
        char what[96];
        proj_tensors(f, shapes[k][0], shapes[k][1], orr, oc);
        snprintf(what, sizeof what, "%s %lldx%lld", gname,
                 (long long)shapes[k][0], (long long)shapes[k][1]);
        CHECK_CALL(f->ctx, f, call, proj_unchanged, ST(OWL_ERR_SHAPE), gname, what);
    }
    const int64_t oshapes[4][2] = {{oc, orr}, {orr + 1, oc}, {orr, oc + 1}, {orr, oc - 1}};
    for (int k = 0; k < 4; k++) {
        if ((oshapes[k][0] == orr && oshapes[k][1] == oc) || oshapes[k][1] < 1)
            continue;
        char what[96];
        proj_tensors(f, gr, gc, oshapes[k][0], oshapes[k][1]);
        snprintf(what, sizeof what, "%s %lldx%lld", oname,
                 (long long)oshapes[k][0], (long long)oshapes[k][1]);
        CHECK_CALL(f->ctx, f, call, proj_unchanged, ST(OWL_ERR_SHAPE), oname, what);
    }
    proj_tensors(f, gr, gc, orr, oc);
}

static void test_galore_calls_reject(void **state)
{
    (void)state;
    static proj_fx f, twin;
    memset(&f, 0, sizeof f);
    memset(&twin, 0, sizeof twin);
    f.ctx = ctx_with(2);
    twin.ctx = ctx_with(2);
    owl_galore_options o;
    valid_galore_options(&o);
    EXPECT_OK(f.ctx, owl_galore_create(f.ctx, &o, &f.proj));
    EXPECT_OK(twin.ctx, owl_galore_create(twin.ctx, &o, &twin.proj));
    assert_int_equal(owl_galore_is_left(f.proj), 0); /* tall: right side */

    uint64_t lr_rows = 0, lr_cols = 0;
    EXPECT_OK(f.ctx, owl_galore_lowrank_shape(f.proj, &lr_rows, &lr_cols));
    assert_int_equal(lr_rows, M);
    assert_int_equal(lr_cols, R);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_galore_lowrank_shape(NULL, &lr_rows, &lr_cols));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "rows",
                owl_galore_lowrank_shape(f.proj, NULL, &lr_cols));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "cols",
                owl_galore_lowrank_shape(f.proj, &lr_rows, NULL));
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL, owl_galore_invalidate(NULL));

    /* --- No subspace yet: nothing may create one on failure. ---------- */
    test_fill_normal(f.grad, M * N, 41);
    memcpy(twin.grad, f.grad, sizeof f.grad);
    proj_tensors(&f, M, R, M, N); /* lowrank M x R in, M x N out */
    proj_snapshot(&f);
    assert_false(f.has_basis);
    CHECK_CALL(f.ctx, &f, back_call, proj_unchanged, ST(OWL_ERR_STATE), NULL,
               "project_back before any subspace");
    proj_tensors(&f, M, N, R, N); /* basis Q: R x N */
    CHECK_CALL(f.ctx, &f, basis_call, proj_unchanged, ST(OWL_ERR_STATE), NULL,
               "get_basis before any subspace");

    proj_tensors(&f, M, N, M, R);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_galore_project(NULL, 0, f.pg, f.po, NULL));
    CHECK_TENSOR_ARG(f.ctx, &f, project_call, proj_unchanged, "grad", &f.pg,
                     OWL_DTYPE_F64);
    CHECK_TENSOR_ARG(f.ctx, &f, project_call, proj_unchanged, "out", &f.po,
                     OWL_DTYPE_BF16);
    f.ot.dtype = OWL_DTYPE_F16; /* out is f32 */
    CHECK_CALL(f.ctx, &f, project_call, proj_unchanged, ST(OWL_ERR_DTYPE),
               "out", "project into an f16 out");
    f.ot.dtype = OWL_DTYPE_F32;
    check_proj_shapes(&f, project_call, "grad", M, N, "out", M, R);
    f.grad[5] = NAN;
    CHECK_CALL(f.ctx, &f, project_call, proj_unchanged, ST(OWL_ERR_NONFINITE),
               "grad", "project a grad holding a NaN");
    f.grad[5] = -INFINITY;
    CHECK_CALL(f.ctx, &f, project_call, proj_unchanged, ST(OWL_ERR_NONFINITE),
               "grad", "project a grad holding an Inf");

    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL, owl_galore_refresh(NULL, f.pg));
    CHECK_CALL(f.ctx, &f, refresh_call, proj_unchanged, ST(OWL_ERR_NONFINITE),
               "grad", "refresh from a grad holding an Inf");
    f.grad[5] = twin.grad[5];
    CHECK_TENSOR_ARG(f.ctx, &f, refresh_call, proj_unchanged, "grad", &f.pg,
                     OWL_DTYPE_F64);
    owl_tensor_init(&f.gt, f.grad, OWL_DTYPE_F32, N, M);
    CHECK_CALL(f.ctx, &f, refresh_call, proj_unchanged, ST(OWL_ERR_SHAPE),
               "grad", "refresh from a transposed grad");

    /* --- With a subspace: failures keep it, and the schedule. --------- */
    proj_tensors(&f, M, N, M, R);
    proj_tensors(&twin, M, N, M, R);
    f.iter = twin.iter = 0;
    EXPECT_OK(f.ctx, project_call(&f));
    EXPECT_OK(twin.ctx, project_call(&twin));
    assert_int_equal(f.refreshed, 1);
    assert_memory_equal(f.out, twin.out, sizeof f.out);
    proj_snapshot(&f);
    assert_true(f.has_basis);

    f.iter = 3; /* a refresh is due: a failure must not perform it */
    CHECK_TENSOR_ARG(f.ctx, &f, project_call, proj_unchanged, "grad", &f.pg,
                     OWL_DTYPE_F64);
    CHECK_TENSOR_ARG(f.ctx, &f, project_call, proj_unchanged, "out", &f.po,
                     OWL_DTYPE_BF16);
    check_proj_shapes(&f, project_call, "grad", M, N, "out", M, R);
    f.grad[17] = NAN;
    CHECK_CALL(f.ctx, &f, project_call, proj_unchanged, ST(OWL_ERR_NONFINITE),
               "grad", "project a grad holding a NaN at a refresh");
    CHECK_CALL(f.ctx, &f, refresh_call, proj_unchanged, ST(OWL_ERR_NONFINITE),
               "grad", "refresh from a grad holding a NaN");
    f.grad[17] = twin.grad[17];

    /* project_back: lowrank M x R in, M x N out. */
    float lowrank[M * R * SLACK];
    test_fill_uniform(lowrank, M * R, 43);
    owl_tensor lt, bt;
    owl_tensor_init(&lt, lowrank, OWL_DTYPE_F32, M, R);
    owl_tensor_init(&bt, f.out, OWL_DTYPE_F32, M, N);
    EXPECT_OK(f.ctx, owl_galore_project_back(f.proj, &lt, &bt));
    proj_snapshot(&f);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_galore_project_back(NULL, &lt, &bt));
    {
        /* back_call reads (pg, po) as (lowrank, out). */
        owl_tensor *pl = &lt, *pb = &bt;
        owl_tensor *saved_g = f.pg, *saved_o = f.po;
        f.pg = pl;
        f.po = pb;
        CHECK_TENSOR_ARG(f.ctx, &f, back_call, proj_unchanged, "lowrank",
                         &f.pg, -1);
        CHECK_TENSOR_ARG(f.ctx, &f, back_call, proj_unchanged, "out", &f.po,
                         OWL_DTYPE_F64);
        static const int64_t lshapes[3][2] = {{R, M}, {M, R + 1}, {M - 1, R}};
        for (int k = 0; k < 3; k++) {
            owl_tensor_init(&lt, lowrank, OWL_DTYPE_F32, lshapes[k][0], lshapes[k][1]);
            CHECK_CALL(f.ctx, &f, back_call, proj_unchanged, ST(OWL_ERR_SHAPE),
                       "lowrank", "project_back from a mis-shaped lowrank");
        }
        owl_tensor_init(&lt, lowrank, OWL_DTYPE_F32, M, R);
        static const int64_t oshapes[3][2] = {{N, M}, {M, N + 1}, {M + 1, N}};
        for (int k = 0; k < 3; k++) {
            owl_tensor_init(&bt, f.out, OWL_DTYPE_F32, oshapes[k][0], oshapes[k][1]);
            CHECK_CALL(f.ctx, &f, back_call, proj_unchanged, ST(OWL_ERR_SHAPE),
                       "out", "project_back into a mis-shaped out");
        }
        owl_tensor_init(&bt, f.out, OWL_DTYPE_F32, M, N);
        f.pg = saved_g;
        f.po = saved_o;
    }

    /* get_basis: Q is R x N (right side), f32. */
    {
        owl_tensor qt;
        owl_tensor_init(&qt, f.out, OWL_DTYPE_F32, R, N);
        owl_tensor *saved_o = f.po;
        f.po = &qt;
        EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                    owl_galore_get_basis(NULL, &qt));
        CHECK_TENSOR_ARG(f.ctx, &f, basis_call, proj_unchanged, "out", &f.po,
                         OWL_DTYPE_BF16);
        static const int64_t qshapes[3][2] = {{N, R}, {M, R}, {R + 1, N}};
        for (int k = 0; k < 3; k++) {
            owl_tensor_init(&qt, f.out, OWL_DTYPE_F32, qshapes[k][0], qshapes[k][1]);
            CHECK_CALL(f.ctx, &f, basis_call, proj_unchanged, ST(OWL_ERR_SHAPE),
                       "out", "get_basis into a mis-shaped out");
        }
        f.po = saved_o;
    }

    /* After all those failures the projector behaves exactly like its twin
     * that never saw them: same refresh at iter 3, same projections. */
    proj_tensors(&f, M, N, M, R);
    test_fill_normal(f.grad, M * N, 44);
    memcpy(twin.grad, f.grad, sizeof f.grad);
    for (uint64_t it = 1; it <= 4; it++) {
        f.iter = twin.iter = it;
        EXPECT_OK(f.ctx, project_call(&f));
        EXPECT_OK(twin.ctx, project_call(&twin));
        assert_int_equal(f.refreshed, twin.refreshed);
        assert_int_equal(f.refreshed, it == 3);
        assert_memory_equal(f.out, twin.out, M * R * sizeof(float));
    }
    assert_int_equal(owl_galore_refresh_count(f.proj), 2);
    assert_int_equal(owl_galore_refresh_count(twin.proj), 2);
    owl_galore_free(f.proj);
    owl_galore_free(twin.proj);
    owl_context_free(f.ctx);
    owl_context_free(twin.ctx);
}

/* ------------------------------------------------------------------ */
/* AdamW                                                               */
/* ------------------------------------------------------------------ */

static void valid_adamw_options(owl_adamw_options *o)
{
    owl_adamw_options_init(o, sizeof *o);
    o->weight_decay = 0.01;
}

static void expect_no_adamw(const char *file, int line, owl_context *ctx,
                            const owl_adamw_options *o, uint64_t rows,
                            uint64_t cols, uint32_t allowed, const char *words,
                            const char *what)
{
    owl_adamw *out = (owl_adamw *)&out;
    char primed[MSG_CAP];
    prime_message(ctx, primed);
    owl_status s = owl_adamw_create(ctx, o, rows, cols, &out);
    check_failure(file, line, what, ctx, primed, s, allowed, words);
    if (out != NULL) {
        print_error("%s failed but left *out set\n", what);
        _fail(file, line);
    }
}

static void test_adamw_create_rejects(void **state)
{
    (void)state;
    owl_context *ctx = ctx_with(1);
    owl_adamw_options o;
    owl_adamw *a = NULL;
    valid_adamw_options(&o);
    EXPECT_OK(ctx, owl_adamw_create(ctx, &o, M, N, &a));
    owl_adamw_free(a);
    o.beta1 = 0.0; /* the closed end of [0, 1) */
    o.beta2 = 0.0;
    o.moment_dtype = OWL_DTYPE_BF16;
    EXPECT_OK(ctx, owl_adamw_create(ctx, &o, M, N, &a));
    owl_adamw_free(a);

    a = (owl_adamw *)&a;
    valid_adamw_options(&o);
    assert_int_equal(owl_adamw_create(NULL, &o, M, N, &a), OWL_ERR_NULL_POINTER);
    if (a != NULL)
        fail_msg("owl_adamw_create with a NULL context failed but left *out set");
    EXPECT_FAIL(ctx, ST(OWL_ERR_NULL_POINTER), "out",
                owl_adamw_create(ctx, &o, M, N, NULL));
    expect_no_adamw(__FILE__, __LINE__, ctx, NULL, M, N,
                    ST(OWL_ERR_NULL_POINTER), "opts", "NULL opts");
    const uint32_t dims = ST(OWL_ERR_INVALID_ARGUMENT) | ST(OWL_ERR_SHAPE);
    /* The message may speak of the moments' shape rather than rows/cols. */
    expect_no_adamw(__FILE__, __LINE__, ctx, &o, 0, N, dims, "rows|shape",
                    "rows = 0");
    expect_no_adamw(__FILE__, __LINE__, ctx, &o, M, 0, dims, "cols|shape",
                    "cols = 0");
    expect_no_adamw(__FILE__, __LINE__, ctx, &o, UINT64_MAX, 2,
                    dims | ST(OWL_ERR_OUT_OF_MEMORY) | ST(OWL_ERR_UNSUPPORTED),
                    "rows|shape", "rows = UINT64_MAX");

#define BAD_ADAMW(field, value, allowed, words)                                \
    do {                                                                       \
        valid_adamw_options(&o);                                               \
        o.field = (value);                                                     \
        expect_no_adamw(__FILE__, __LINE__, ctx, &o, M, N, (allowed), (words), \
                        #field " = " #value);                                  \
    } while (0)
    const uint32_t inval = ST(OWL_ERR_INVALID_ARGUMENT);
    BAD_ADAMW(struct_size, 0, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    BAD_ADAMW(struct_size, UINT64_MAX, ST(OWL_ERR_STRUCT_SIZE), "struct_size");
    BAD_ADAMW(beta1, -0.1, inval, "beta1");
    BAD_ADAMW(beta1, 1.0, inval, "beta1");
    BAD_ADAMW(beta1, 1.5, inval, "beta1");
    BAD_ADAMW(beta1, NAN, inval, "beta1");
    BAD_ADAMW(beta2, -1e-9, inval, "beta2");
    BAD_ADAMW(beta2, 1.0, inval, "beta2");
    BAD_ADAMW(beta2, NAN, inval, "beta2");
    BAD_ADAMW(eps, 0.0, inval, "eps");
    BAD_ADAMW(eps, -1e-8, inval, "eps");
    BAD_ADAMW(eps, NAN, inval, "eps");
    BAD_ADAMW(weight_decay, -0.01, inval, "weight_decay");
    BAD_ADAMW(weight_decay, NAN, inval, "weight_decay");
    BAD_ADAMW(semantics, -1, inval, "semantics");
    BAD_ADAMW(semantics, 2, inval, "semantics");
    BAD_ADAMW(moment_dtype, OWL_DTYPE_F16, ST(OWL_ERR_DTYPE), "moment_dtype");
    BAD_ADAMW(moment_dtype, OWL_DTYPE_F64, ST(OWL_ERR_DTYPE), "moment_dtype");
    BAD_ADAMW(moment_dtype, 9, ST(OWL_ERR_DTYPE), "moment_dtype");
    BAD_ADAMW(on_refresh, -1, inval, "on_refresh");
    BAD_ADAMW(on_refresh, 2, inval, "on_refresh");
    BAD_ADAMW(rounding, -1, inval, "rounding");
    BAD_ADAMW(rounding, 2, inval, "rounding");
#undef BAD_ADAMW
    owl_context_free(ctx);
}

typedef struct {
    owl_context *ctx;
    owl_adamw *adam;
    owl_galore *proj; /* low-rank steps only */
    int64_t mr, mc;   /* moment shape */
    float w[M * N * SLACK], g[M * N * SLACK];
    uint16_t w16[M * N * SLACK], g16[M * N * SLACK];
    owl_tensor wt, gt;
    owl_tensor *pw, *pg;
    double lr;
    /* snapshot */
    float w_before[M * N * SLACK];
    uint16_t w16_before[M * N * SLACK];
    float m_before[M * N], v_before[M * N];
    uint64_t steps, bias;
    bool has_basis;
    float basis[R * N];
    uint64_t refreshes;
} adam_fx;

static owl_status full_call(void *p)
{
    adam_fx *f = p;
    return owl_adamw_full(f->adam, f->pw, f->pg, f->lr);
}

static owl_status lowrank_call(void *p)
{
    adam_fx *f = p;
    return owl_adamw_lowrank(f->adam, f->proj, f->pw, f->pg, f->lr);
}

static void read_moments(adam_fx *f, float *m, float *v)
{
    owl_tensor t;
    owl_tensor_init(&t, m, OWL_DTYPE_F32, f->mr, f->mc);
    assert_owl_ok(f->ctx, owl_adamw_get_moment(f->adam, 0, &t));
    owl_tensor_init(&t, v, OWL_DTYPE_F32, f->mr, f->mc);
    assert_owl_ok(f->ctx, owl_adamw_get_moment(f->adam, 1, &t));
}

static bool read_basis(owl_galore *proj, float *basis)
{
    owl_tensor bt;
    owl_tensor_init(&bt, basis, OWL_DTYPE_F32, R, N);
    return owl_galore_get_basis(proj, &bt) == OWL_OK;
}

static void adam_snapshot(adam_fx *f)
{
    memcpy(f->w_before, f->w, sizeof f->w);
    memcpy(f->w16_before, f->w16, sizeof f->w16);
    read_moments(f, f->m_before, f->v_before);
    f->steps = owl_adamw_step_count(f->adam);
    f->bias = owl_adamw_bias_step(f->adam);
    if (f->proj != NULL) {
        f->refreshes = owl_galore_refresh_count(f->proj);
        f->has_basis = read_basis(f->proj, f->basis);
    }
}

static const char *adam_unchanged(void *p)
{
    adam_fx *f = p;
    if (memcmp(f->w, f->w_before, sizeof f->w) != 0 ||
        memcmp(f->w16, f->w16_before, sizeof f->w16) != 0)
        return "the weight";
    if (owl_adamw_step_count(f->adam) != f->steps)
        return "the step count";
    if (owl_adamw_bias_step(f->adam) != f->bias)
        return "the bias-correction step";
    float m[M * N], v[M * N];
    read_moments(f, m, v);
    size_t n = (size_t)(f->mr * f->mc) * sizeof(float);
    if (memcmp(m, f->m_before, n) != 0)
        return "the first moment";
    if (memcmp(v, f->v_before, n) != 0)
        return "the second moment";
    if (f->proj == NULL)
        return NULL;
    if (owl_galore_refresh_count(f->proj) != f->refreshes)
        return "the projector's refresh count";
    float basis[R * N];
    bool has = read_basis(f->proj, basis);
    if (has != f->has_basis)
        return "the projector's subspace (created or lost)";
    if (has && memcmp(basis, f->basis, sizeof basis) != 0)
        return "the projector's basis";
    return NULL;
}

static void adam_tensors(adam_fx *f, int64_t rows, int64_t cols)
{
    owl_tensor_init(&f->wt, f->w, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&f->gt, f->g, OWL_DTYPE_F32, rows, cols);
    f->pw = &f->wt;
    f->pg = &f->gt;
}

/* The cases both steps share: NULLs, damaged tensors, shapes, lr, and
 * non-finite gradients in every storage dtype. */
static void check_step_rejects(adam_fx *f, call_fn call)
{
    CHECK_TENSOR_ARG(f->ctx, f, call, adam_unchanged, "weight", &f->pw,
                     OWL_DTYPE_F64);
    CHECK_TENSOR_ARG(f->ctx, f, call, adam_unchanged, "grad", &f->pg,
                     OWL_DTYPE_F64);

    owl_tensor_init(&f->gt, f->g, OWL_DTYPE_F32, N, M);
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_SHAPE), "grad",
               "a transposed grad");
    owl_tensor_init(&f->gt, f->g, OWL_DTYPE_F32, M, N - 1);
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_SHAPE), "grad",
               "a grad one column short");
    owl_tensor_init(&f->wt, f->w, OWL_DTYPE_F32, M - 1, N);
    owl_tensor_init(&f->gt, f->g, OWL_DTYPE_F32, M - 1, N);
    /* Tensors that fit each other but not the handle's moments. */
    const uint32_t handle_shape = ST(OWL_ERR_SHAPE) | ST(OWL_ERR_MISMATCH);
    CHECK_CALL(f->ctx, f, call, adam_unchanged, handle_shape,
               "weight|grad", "weight and grad one row short");
    owl_tensor_init(&f->wt, f->w, OWL_DTYPE_F32, N, M);
    owl_tensor_init(&f->gt, f->g, OWL_DTYPE_F32, N, M);
    CHECK_CALL(f->ctx, f, call, adam_unchanged, handle_shape,
               "weight|grad", "weight and grad transposed");
    adam_tensors(f, M, N);

    static const double bad_lr[] = {-1e-3, -INFINITY};
    for (int i = 0; i < 2; i++) {
        f->lr = bad_lr[i];
        CHECK_CALL(f->ctx, f, call, adam_unchanged,
                   ST(OWL_ERR_INVALID_ARGUMENT), "lr", "a negative lr");
    }
    f->lr = NAN;
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_INVALID_ARGUMENT),
               "lr", "lr = NaN");
    f->lr = 1e-2;

    const float keep = f->g[M * N - 1];
    f->g[M * N - 1] = NAN;
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_NONFINITE), "grad",
               "an f32 grad holding a NaN");
    f->g[M * N - 1] = INFINITY;
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_NONFINITE), "grad",
               "an f32 grad holding an Inf");
    f->g[M * N - 1] = keep;
    /* Half-precision weights with gradients of the same dtype. 0x3C00 is
     * 1.0 in f16 and 1.875 in bf16: finite either way. */
    for (int i = 0; i < M * N; i++)
        f->g16[i] = 0x3C00;
    owl_tensor_init(&f->wt, f->w16, OWL_DTYPE_BF16, M, N);
    owl_tensor_init(&f->gt, f->g16, OWL_DTYPE_BF16, M, N);
    f->g16[9] = BF16_NAN;
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_NONFINITE), "grad",
               "a bf16 grad holding a NaN");
    owl_tensor_init(&f->wt, f->w16, OWL_DTYPE_F16, M, N);
    owl_tensor_init(&f->gt, f->g16, OWL_DTYPE_F16, M, N);
    f->g16[9] = F16_INF;
    CHECK_CALL(f->ctx, f, call, adam_unchanged, ST(OWL_ERR_NONFINITE), "grad",
               "an f16 grad holding an Inf");
    adam_tensors(f, M, N);
}

static void test_adamw_full_rejects(void **state)
{
    (void)state;
    static adam_fx f, twin;
    memset(&f, 0, sizeof f);
    memset(&twin, 0, sizeof twin);
    owl_adamw_options o;
    valid_adamw_options(&o);
    adam_fx *both[2] = {&f, &twin};
    for (int k = 0; k < 2; k++) {
        adam_fx *x = both[k];
        x->ctx = ctx_with(2);
        x->mr = M;
        x->mc = N;
        EXPECT_OK(x->ctx, owl_adamw_create(x->ctx, &o, M, N, &x->adam));
        test_fill_normal(x->w, M * N, 51);
        test_fill_normal(x->g, M * N, 52);
        adam_tensors(x, M, N);
        x->lr = 1e-2;
        EXPECT_OK(x->ctx, full_call(x));
    }
    adam_snapshot(&f);
    assert_int_equal(f.steps, 1);

    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_adamw_full(NULL, f.pw, f.pg, 0.1));
    check_step_rejects(&f, full_call);

    /* get_moment and reset. */
    float mbuf[M * N * SLACK];
    memset(mbuf, 0x5A, sizeof mbuf);
    float mcopy[M * N * SLACK];
    memcpy(mcopy, mbuf, sizeof mbuf);
    owl_tensor mt;
    owl_tensor_init(&mt, mbuf, OWL_DTYPE_F32, M, N);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_adamw_get_moment(NULL, 0, &mt));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "out",
                owl_adamw_get_moment(f.adam, 0, NULL));
    static const int32_t bad_which[] = {-1, 2, 100};
    for (int i = 0; i < 3; i++)
        EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "which",
                    owl_adamw_get_moment(f.adam, bad_which[i], &mt));
    owl_tensor_init(&mt, mbuf, OWL_DTYPE_BF16, M, N);
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_DTYPE), "out",
                owl_adamw_get_moment(f.adam, 0, &mt));
    static const int64_t shapes[3][2] = {{N, M}, {M, N + 1}, {M - 1, N}};
    for (int i = 0; i < 3; i++) {
        owl_tensor_init(&mt, mbuf, OWL_DTYPE_F32, shapes[i][0], shapes[i][1]);
        EXPECT_FAIL(f.ctx, ST(OWL_ERR_SHAPE), "out",
                    owl_adamw_get_moment(f.adam, 1, &mt));
    }
    owl_tensor_init(&mt, mbuf, OWL_DTYPE_F32, M, N);
    mt.flags = 2;
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_INVALID_ARGUMENT), "out",
                owl_adamw_get_moment(f.adam, 1, &mt));
    assert_memory_equal(mbuf, mcopy, sizeof mbuf);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL, owl_adamw_reset(NULL));
    assert_null(adam_unchanged(&f));

    /* Two more steps: identical to the twin that never failed. */
    for (int s = 0; s < 2; s++) {
        test_fill_normal(f.g, M * N, 60 + (uint64_t)s);
        memcpy(twin.g, f.g, sizeof f.g);
        EXPECT_OK(f.ctx, full_call(&f));
        EXPECT_OK(twin.ctx, full_call(&twin));
    }
    assert_memory_equal(f.w, twin.w, sizeof f.w);
    adam_snapshot(&f);
    adam_snapshot(&twin);
    assert_memory_equal(f.m_before, twin.m_before, sizeof f.m_before);
    assert_memory_equal(f.v_before, twin.v_before, sizeof f.v_before);
    assert_int_equal(f.steps, 3);
    for (int k = 0; k < 2; k++) {
        owl_adamw_free(both[k]->adam);
        owl_context_free(both[k]->ctx);
    }
}

static void test_adamw_lowrank_rejects(void **state)
{
    (void)state;
    static adam_fx f, twin;
    memset(&f, 0, sizeof f);
    memset(&twin, 0, sizeof twin);
    owl_adamw_options o;
    valid_adamw_options(&o);
    owl_galore_options go;
    valid_galore_options(&go);
    go.update_gap = 2;
    adam_fx *both[2] = {&f, &twin};
    for (int k = 0; k < 2; k++) {
        adam_fx *x = both[k];
        x->ctx = ctx_with(2);
        x->mr = M;
        x->mc = R;
        EXPECT_OK(x->ctx, owl_galore_create(x->ctx, &go, &x->proj));
        EXPECT_OK(x->ctx, owl_adamw_create(x->ctx, &o, M, R, &x->adam));
        test_fill_normal(x->w, M * N, 71);
        test_fill_normal(x->g, M * N, 72);
        adam_tensors(x, M, N);
        x->lr = 1e-2;
    }
    /* Before the first step no subspace exists; failures must not make one. */
    adam_snapshot(&f);
    assert_false(f.has_basis);
    EXPECT_FAIL(NULL, ST(OWL_ERR_NULL_POINTER), NULL,
                owl_adamw_lowrank(NULL, f.proj, f.pw, f.pg, 0.1));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_NULL_POINTER), "proj",
                owl_adamw_lowrank(f.adam, NULL, f.pw, f.pg, 0.1));
    check_step_rejects(&f, lowrank_call);

    for (int k = 0; k < 2; k++)
        EXPECT_OK(both[k]->ctx, lowrank_call(both[k]));
    adam_snapshot(&f);
    assert_true(f.has_basis);
    assert_int_equal(f.refreshes, 1);
    EXPECT_OK(f.ctx, lowrank_call(&f));
    EXPECT_OK(twin.ctx, lowrank_call(&twin));
    adam_snapshot(&f);
    /* Step count 2: the next step refreshes (T = 2). A failed one must not. */
    check_step_rejects(&f, lowrank_call);

    /* Moments shaped for the other side, or handles of another context. */
    owl_adamw *wrong = NULL;
    EXPECT_OK(f.ctx, owl_adamw_create(f.ctx, &o, R, N, &wrong));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_MISMATCH) | ST(OWL_ERR_SHAPE), NULL,
                owl_adamw_lowrank(wrong, f.proj, f.pw, f.pg, f.lr));
    assert_int_equal(owl_adamw_step_count(wrong), 0);
    owl_adamw_free(wrong);
    assert_null(adam_unchanged(&f));

    owl_context *other = ctx_with(1);
    owl_galore *proj2 = NULL;
    owl_adamw *adam2 = NULL;
    EXPECT_OK(other, owl_galore_create(other, &go, &proj2));
    EXPECT_OK(other, owl_adamw_create(other, &o, M, R, &adam2));
    EXPECT_FAIL(f.ctx, ST(OWL_ERR_MISMATCH), "context",
                owl_adamw_lowrank(f.adam, proj2, f.pw, f.pg, f.lr));
    assert_null(adam_unchanged(&f));
    assert_int_equal(owl_galore_refresh_count(proj2), 0);
    EXPECT_FAIL(other, ST(OWL_ERR_MISMATCH), "context",
                owl_adamw_lowrank(adam2, f.proj, f.pw, f.pg, f.lr));
    assert_null(adam_unchanged(&f));
    assert_int_equal(owl_adamw_step_count(adam2), 0);
    owl_adamw_free(adam2);
    owl_galore_free(proj2);
    owl_context_free(other);

    /* Three more steps, through the refresh: identical to the twin. */
    for (int s = 0; s < 3; s++) {
        test_fill_normal(f.g, M * N, 80 + (uint64_t)s);
        memcpy(twin.g, f.g, sizeof f.g);
        EXPECT_OK(f.ctx, lowrank_call(&f));
        EXPECT_OK(twin.ctx, lowrank_call(&twin));
    }
    assert_memory_equal(f.w, twin.w, sizeof f.w);
    adam_snapshot(&f);
    adam_snapshot(&twin);
    assert_memory_equal(f.m_before, twin.m_before, M * R * sizeof(float));
    assert_memory_equal(f.v_before, twin.v_before, M * R * sizeof(float));
    assert_memory_equal(f.basis, twin.basis, sizeof f.basis);
    assert_int_equal(f.steps, 5);
    assert_int_equal(f.refreshes, 3); /* before updates 1, 3 and 5 */
    for (int k = 0; k < 2; k++) {
        owl_adamw_free(both[k]->adam);
        owl_galore_free(both[k]->proj);
        owl_context_free(both[k]->ctx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_getters_on_bad_values),
        cmocka_unit_test(test_free_accepts_null),
        cmocka_unit_test(test_options_init_rejects),
        cmocka_unit_test(test_context_rejects),
        cmocka_unit_test(test_act_norm_rejects),
        cmocka_unit_test(test_lod_rejects),
        cmocka_unit_test(test_esd_rejects),
        cmocka_unit_test(test_sampler_create_rejects),
        cmocka_unit_test(test_sampler_calls_reject),
        cmocka_unit_test(test_galore_create_rejects),
        cmocka_unit_test(test_galore_calls_reject),
        cmocka_unit_test(test_adamw_create_rejects),
        cmocka_unit_test(test_adamw_full_rejects),
        cmocka_unit_test(test_adamw_lowrank_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
