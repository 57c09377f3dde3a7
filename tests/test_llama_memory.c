/* The LLaMa example's memory plan (llama_memory_plan) and the check
 * llama_create makes with it. References: the bytes the allocator hands
 * out while llama_create runs (glibc's mallinfo2, which knows nothing of
 * the plan), the buffer list of the README's closed form, MemAvailable
 * read here from /proc/meminfo, and configurations whose sizes do not fit
 * in 64 bits. */
#include "common/testutil.h"

#include "llama.h"

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llama_config small_config(void)
{
    llama_config c = {.dim = 64, .hidden_dim = 176, .n_layers = 3,
                      .n_heads = 4, .n_kv_heads = 2, .vocab_size = 97,
                      .seq_len = 48, .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f, .tied = 0};
    return c;
}

/* The README's closed form: weights and gradients 4 bytes a parameter;
 * per layer the kept activations x, h, xn_att, xn_ffn (BT x dim), two
 * norm statistics (BT), q and att_out (BT x q_dim), k and v (BT x kv_dim),
 * the attention weights (B x heads x T x T), gate, up and mid (BT x
 * hidden); then x entering the final norm, its statistic and output, the
 * logits (BT x vocab) and the int32 tokens and targets. Scratch: RoPE
 * tables (2 x T x hd/2), d_res and d_norm (BT x dim), d_q and d_att_out,
 * d_k and d_v, d_gate and d_up, and one T x T score block. */
static void closed_form(const llama_config *c, uint64_t B, uint64_t *params,
                        uint64_t *kept, uint64_t *scratch)
{
    uint64_t L = (uint64_t)c->n_layers, d = (uint64_t)c->dim;
    uint64_t f = (uint64_t)c->hidden_dim, V = (uint64_t)c->vocab_size;
    uint64_t H = (uint64_t)c->n_heads, hd = d / H;
    uint64_t q = H * hd, kv = (uint64_t)c->n_kv_heads * hd;
    uint64_t T = (uint64_t)c->seq_len, BT = B * T;
    *params = V * d * (c->tied ? 1 : 2) + d +
              L * (2 * d + q * d + 2 * kv * d + d * q + 3 * f * d);
    uint64_t per_layer = 4 * BT * d + 2 * BT + 2 * BT * q + 2 * BT * kv +
                         B * H * T * T + 3 * BT * f;
    *kept = 4 * (L * per_layer + BT * d + BT + BT * d + BT * V) + 2 * 4 * BT;
    *scratch = 4 * (2 * T * (hd / 2) + 2 * BT * d + 2 * BT * q + 2 * BT * kv +
                    2 * BT * f + T * T);
}

static void test_plan_closed_form(void **state)
{
    (void)state;
    char err[512];
    for (int tied = 0; tied <= 1; tied++)
        for (int B = 1; B <= 3; B += 2) {
            llama_config c = small_config();
            c.tied = tied;
            llama_memory p;
            assert_int_equal(llama_memory_plan(&c, B, &p, err, sizeof err),
                             0);
            uint64_t params, kept, scratch;
            closed_form(&c, (uint64_t)B, &params, &kept, &scratch);
            uint64_t tables = (uint64_t)c.n_layers * 9 * sizeof(float *);
            assert_int_equal(p.weights, 4 * params + tables);
            assert_int_equal(p.gradients, p.weights);
            assert_int_equal(p.activations, kept);
            assert_int_equal(p.workspace, scratch);
            assert_int_equal(p.total, p.weights + p.gradients +
                                          p.activations + p.workspace);
            assert_int_equal(llama_param_count(&c), params);
        }
}

/* What llama_create really allocates is the plan: the heap in use grows by
 * the plan's total, give or take the allocator's bookkeeping (a header per
 * block and page rounding of the large ones). */
static void test_plan_is_what_is_allocated(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    print_message("AddressSanitizer's allocator is not glibc's: "
                  "mallinfo2 sees nothing, skipped\n");
    skip();
#else
    char err[512];
    for (int B = 1; B <= 4; B *= 4) {
        llama_config c = small_config();
        c.seq_len = 96;
        llama_memory p;
        assert_int_equal(llama_memory_plan(&c, B, &p, err, sizeof err), 0);
        struct mallinfo2 before = mallinfo2();
        llama_model m;
        if (llama_create(&m, &c, B, err, sizeof err) != 0)
            fail_msg("llama_create: %s", err);
        struct mallinfo2 after = mallinfo2();
        size_t used_before = before.uordblks + before.hblkhd;
        size_t used_after = after.uordblks + after.hblkhd;
        double got = (double)(used_after - used_before);
        print_message("B = %d: planned %llu bytes, the heap grew by %.0f\n",
                      B, (unsigned long long)p.total, got);
        /* about 40 blocks: at most 4 KiB of rounding and header each */
        assert_true(got >= (double)p.total);
        assert_true(got <= (double)p.total + 40 * 4096.0);
        llama_destroy(&m);
    }
#endif
}

static void test_overflow_refused(void **state)
{
    (void)state;
    char err[512];
    llama_memory p;
    llama_model m;
    /* T x T x heads x layers wraps 64 bits; nothing else is large. */
    llama_config c = {.dim = 8, .hidden_dim = 8, .n_layers = 4, .n_heads = 4,
                      .n_kv_heads = 4, .vocab_size = 8,
                      .seq_len = INT_MAX, .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f};
    assert_int_equal(llama_memory_plan(&c, 1, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "more bytes than a size_t"));
    memset(&m, 0x5A, sizeof m);
    assert_int_equal(llama_create(&m, &c, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "more bytes than a size_t"));
    assert_null(m.w.base);
    assert_null(m.acts);
    /* Parameters alone: layers x hidden x dim past 2^64. */
    llama_config w = {.dim = 1 << 30, .hidden_dim = INT_MAX,
                      .n_layers = INT_MAX, .n_heads = 2, .n_kv_heads = 2,
                      .vocab_size = 2, .seq_len = 1, .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f};
    assert_int_equal(llama_param_count(&w), 0);
    assert_int_equal(llama_memory_plan(&w, 1, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "more bytes than a size_t"));
    /* A batch whose rows an int cannot index. */
    c.seq_len = 1 << 16;
    assert_int_equal(llama_memory_plan(&c, 1 << 16, &p, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "rows"));
    assert_int_equal(llama_memory_plan(&c, 0, &p, err, sizeof err), -1);
}

/* MemAvailable in bytes, read here; 0 when there is none. */
static unsigned long long meminfo_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char key[64];
    unsigned long long v = 0, kb;
    while (fscanf(f, "%63s %llu kB", key, &kb) == 2)
        if (strcmp(key, "MemAvailable:") == 0) {
            v = kb * 1024;
            break;
        }
    fclose(f);
    return v;
}

/* A model planned at about twice the available memory is refused before
 * anything is allocated, with the figure and the flags to change. */
static void test_more_than_available_refused(void **state)
{
    (void)state;
    unsigned long long avail = meminfo_available();
    if (avail == 0) {
        print_message("no MemAvailable in /proc/meminfo: skipped\n");
        skip();
    }
    /* One layer, one head of 2: the attention weights (4 T^2 bytes) and
     * the score block (4 T^2) dominate, 8 T^2 = 2 x available. */
    double t = 1.0;
    while (8.0 * t * t < 2.0 * (double)avail)
        t *= 1.01;
    llama_config c = {.dim = 2, .hidden_dim = 2, .n_layers = 1, .n_heads = 1,
                      .n_kv_heads = 1, .vocab_size = 2, .seq_len = (int)t,
                      .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    char err[512], want[64];
    llama_memory p;
    assert_int_equal(llama_memory_plan(&c, 1, &p, err, sizeof err), 0);
    assert_true(p.total > avail);
    llama_model m;
    memset(&m, 0x5A, sizeof m);
    assert_int_equal(llama_create(&m, &c, 1, err, sizeof err), -1);
    print_message("%s\n", err);
    snprintf(want, sizeof want, "needs %.1f GB for 1 x %d tokens",
             (double)p.total / 1e9, c.seq_len);
    if (!strstr(err, want))
        fail_msg("'%s' does not say '%s'", err, want);
    assert_non_null(strstr(err, "GB available: lower --seq or --batch"));
    assert_null(m.w.base);
    assert_null(m.acts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_closed_form),
        cmocka_unit_test(test_plan_is_what_is_allocated),
        cmocka_unit_test(test_overflow_refused),
        cmocka_unit_test(test_more_than_available_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
