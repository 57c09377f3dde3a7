/*
 * The reference LLaMa trainer: a plain C LLaMa (llama.h) trained with
 * libowlore's owl_optimizer, through the public header only.
 *
 * With no arguments it runs the main demonstration: a tiny byte-level
 * LLaMa pre-trained (FULL) on a synthetic language, then fine-tuned with
 * OWLORE on a shifted variant of it, with the held-out loss on the shifted
 * task before and after. With flags it trains any method on a checkpoint
 * (Hugging Face directory, GGUF file or llama2.c .bin) or a fresh tiny
 * model, on a text file, an id file or the synthetic corpus; --compare
 * runs the five methods from one init. A model that comes with a
 * tokenizer (a GGUF file's metadata, a directory's tokenizer.json) reads
 * --data through it; --steps 0 only evaluates (and saves). `llama --help`
 * lists the flags.
 *
 * The file reads top to bottom: options, model, data, LOD, optimizer, the
 * training loop, checkpoints, --compare, the main demonstration, main().
 */
#include "checkpoint.h"
#include "ckpt_dir.h"
#include "ckpt_model.h"
#include "data.h"
#include "fileio.h"
#include "llama.h"
#include "plot.h"
/* The GPU path's interface (its code is built only with LLAMA_HAVE_CUDA),
 * and train_print_step, which both paths share. */
#include "cuda/train_gpu.h"

#include <owlore/owlore.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout); /* what was printed so far comes before the error */
    va_start(ap, fmt);
    fputs("llama: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Every libowlore call is checked; a failure prints the call, the status
 * and the context's message, then exits. */
#define OWL_CHECK(ctx, call)                                                   \
    do {                                                                       \
        owl_status st_ = (call);                                               \
        if (st_ != OWL_OK)                                                     \
            die("%s failed: %s: %s", #call, owl_status_name(st_),              \
                owl_context_last_error(ctx));                                  \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct options {
    const char *model;      /* HF directory, GGUF file, llama2.c .bin, or
                             * NULL: tiny */
    const char *data;       /* text file: the model's tokens, or bytes */
    const char *ids;        /* pre-tokenized id file */
    int synthetic;          /* neither: DATA_SYNTH_BASE or _SHIFTED */
    int id_bits;
    owl_method method;
    int gamma, period;
    double lod_M;
    int rank, update_gap;
    double galore_scale;
    double lr, min_lr, clip;
    int warmup, steps;
    uint64_t seed;
    int batch, seq;
    int eval_every, eval_batches, calib_batches;
    double heldout;
    owl_dtype moments;
    owl_frozen_policy policy;
    const char *save, *resume, *out;
    owl_dtype save_dtype;   /* --save-dtype: the stored weights */
    int save_every, stop_at;
    int compare;
    int log_every;
    int cuda;      /* --device cuda: the GPU path (cuda/train_gpu.c) */
    int recompute; /* --recompute: activation recomputation on the GPU */
} options;

static const struct { const char *name; owl_method method; } methods[] = {
    {"owlore", OWL_METHOD_OWLORE}, {"owlore-full", OWL_METHOD_OWLORE_FULL},
    {"lisa", OWL_METHOD_LISA}, {"galore", OWL_METHOD_GALORE},
    {"full", OWL_METHOD_FULL},
};
enum { NUM_METHODS = sizeof methods / sizeof methods[0] };

static const char *method_name(owl_method m)
{
    for (int i = 0; i < NUM_METHODS; i++)
        if (methods[i].method == m)
            return methods[i].name;
    return "?";
}

static int uses_lod(owl_method m)
{
    return m == OWL_METHOD_OWLORE || m == OWL_METHOD_OWLORE_FULL;
}

static options default_options(void)
{
    options o = {0};
    o.id_bits = 16;
    o.method = OWL_METHOD_OWLORE;
    o.gamma = 2;
    o.period = 10;
    o.lod_M = 13.0; /* the paper's outlier threshold (spec section 1) */
    o.rank = 8;
    o.update_gap = 50;
    o.galore_scale = 0.25;
    o.lr = 1e-3;
    o.min_lr = 1e-4;
    o.clip = 1.0;
    o.warmup = 10;
    o.steps = 200;
    o.seed = 1;
    o.batch = 16;
    o.seq = 64;
    o.eval_every = 50;
    o.eval_batches = 8;
    o.calib_batches = 8;
    o.heldout = 0.1;
    o.moments = OWL_DTYPE_F32;
    o.save_dtype = OWL_DTYPE_F32;
    o.policy = OWL_FROZEN_KEEP;
    o.out = "llama-out";
    o.log_every = 1;
    return o;
}

static void usage(FILE *f)
{
    options d = default_options();
    fprintf(f,
"usage: llama                 the demonstration: pre-train a tiny model on a\n"
"                             synthetic language, fine-tune it with OwLore\n"
"       llama [flags]         train one method (or --compare all five)\n"
"\n"
"model and data\n"
"  --model PATH         Hugging Face directory, GGUF file or llama2.c .bin\n"
"                       (default: a fresh tiny byte-level model)\n"
"  --data PATH          text file, tokenized by the model's tokenizer (a\n"
"                       GGUF's metadata, a directory's tokenizer.json), or\n"
"                       read as bytes (ids 0..255) when it has none\n"
"  --ids PATH           pre-tokenized ids, --id-bits 16|32 (default %d)\n"
"  --synthetic V        neither: the synthetic language, base|shifted (base)\n"
"  --heldout F          held-out fraction, the end of the data (%g)\n"
"method\n"
"  --method M           owlore | owlore-full | lisa | galore | full (owlore)\n"
"  --gamma N            layers trained per period (%d)\n"
"  --period K           steps between layer draws (%d)\n"
"  --lod-M M            outlier threshold of the LOD ratios (%g)\n"
"  --calib-batches N    batches the LOD statistics are taken over (%d)\n"
"  --rank R             GaLore rank (%d)\n"
"  --update-gap T       GaLore subspace refresh every T updates (%d)\n"
"  --galore-scale A     GaLore scale alpha (%g)\n"
"  --moments f32|bf16   AdamW moment storage (f32)\n"
"  --policy P           frozen layers' state: keep|reset|offload|free (keep)\n"
"schedule\n"
"  --lr LR --min-lr LR  peak rate, then linear decay to min-lr (%g, %g)\n"
"  --warmup N           linear warm-up steps (%d)\n"
"  --steps N            optimizer steps (%d); 0: evaluate the model as\n"
"                       loaded (and save it with --save), no training\n"
"  --clip C             global gradient-norm clip, 0 off (%g)\n"
"  --batch B --seq T    sequences per step and their length (%d, %d)\n"
"  --seed S             init, batches, sampler (%llu)\n"
"  --eval-every N       held-out loss every N steps (%d)\n"
"  --eval-batches N     held-out batches per evaluation (%d)\n"
"  --log-every N        print every N-th step (%d)\n"
"checkpoints and output\n"
"  --save DIR           save weights, optimizer and trainer state at the end\n"
"                       (DIR is replaced as a whole, atomically)\n"
"  --save-dtype T       f32 | bf16 | f16: the saved weights (f32; resuming\n"
"                       is exact only from f32)\n"
"  --save-every N       ... and every N steps\n"
"  --stop-at N          stop after step N (as if interrupted; with --save)\n"
"  --resume DIR         continue a saved run (same flags)\n"
"  --compare            the five methods from one init; writes OUT/compare.csv\n"
"                       and OUT/compare.svg\n"
"  --out DIR            output directory of --compare (%s)\n"
"device\n"
"  --device cpu|cuda    where the model trains (cpu); cuda: bf16 weights on\n"
"                       CUDA device 0 with libowlore's CUDA backend, data\n"
"                       parallel over NCCL ranks when built with NCCL\n"
"  --recompute          (cuda) keep only each layer's input, recompute the\n"
"                       rest in the backward pass\n",
            d.id_bits, d.heldout, d.gamma, d.period, d.lod_M,
            d.calib_batches, d.rank, d.update_gap, d.galore_scale, d.lr,
            d.min_lr, d.warmup, d.steps, d.clip, d.batch, d.seq,
            (unsigned long long)d.seed, d.eval_every, d.eval_batches,
            d.log_every, d.out);
}

static long parse_int(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        die("%s %s: expected an integer in [%ld, %ld]", flag, v, lo, hi);
    return x;
}

static double parse_num(const char *flag, const char *v, double lo, double hi)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi))
        die("%s %s: expected a number in [%g, %g]", flag, v, lo, hi);
    return x;
}

static void parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--compare")) {
            o->compare = 1;
            continue;
        }
        if (!strcmp(a, "--recompute")) {
            o->recompute = 1;
            continue;
        }
        if (i + 1 >= argc)
            die("%s needs a value (see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--ids")) o->ids = v;
        else if (!strcmp(a, "--synthetic")) {
            if (!strcmp(v, "base")) o->synthetic = DATA_SYNTH_BASE;
            else if (!strcmp(v, "shifted")) o->synthetic = DATA_SYNTH_SHIFTED;
            else die("--synthetic %s: expected base or shifted", v);
        }
        else if (!strcmp(a, "--id-bits")) {
            o->id_bits = (int)parse_int(a, v, 16, 32);
            if (o->id_bits != 16 && o->id_bits != 32)
                die("--id-bits %s: expected 16 or 32", v);
        } else if (!strcmp(a, "--heldout"))
            o->heldout = parse_num(a, v, 1e-6, 0.9);
        else if (!strcmp(a, "--method")) {
            int k = 0;
            while (k < NUM_METHODS && strcmp(methods[k].name, v))
                k++;
            if (k == NUM_METHODS)
                die("--method %s: expected owlore, owlore-full, lisa, galore "
                    "or full", v);
            o->method = methods[k].method;
        }
        else if (!strcmp(a, "--gamma"))
            o->gamma = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--period"))
            o->period = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--lod-M")) o->lod_M = parse_num(a, v, 1e-9, 1e9);
        else if (!strcmp(a, "--calib-batches"))
            o->calib_batches = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--rank"))
            o->rank = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--update-gap"))
            o->update_gap = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--galore-scale"))
            o->galore_scale = parse_num(a, v, 1e-9, 1e9);
        else if (!strcmp(a, "--moments")) {
            if (!strcmp(v, "f32")) o->moments = OWL_DTYPE_F32;
            else if (!strcmp(v, "bf16")) o->moments = OWL_DTYPE_BF16;
            else die("--moments %s: expected f32 or bf16", v);
        } else if (!strcmp(a, "--policy")) {
            static const char *const names[] = {"keep", "reset", "offload", "free"};
            static const owl_frozen_policy pols[] = {
                OWL_FROZEN_KEEP, OWL_FROZEN_RESET, OWL_FROZEN_OFFLOAD,
                OWL_FROZEN_FREE};
            int k = 0;
            while (k < 4 && strcmp(names[k], v))
                k++;
            if (k == 4)
                die("--policy %s: expected keep, reset, offload or free", v);
            o->policy = pols[k];
        }
        else if (!strcmp(a, "--lr")) o->lr = parse_num(a, v, 0, 1e3);
        else if (!strcmp(a, "--min-lr")) o->min_lr = parse_num(a, v, 0, 1e3);
        else if (!strcmp(a, "--warmup"))
            o->warmup = (int)parse_int(a, v, 0, 1 << 30);
        else if (!strcmp(a, "--steps"))
            o->steps = (int)parse_int(a, v, 0, 1 << 30);
        else if (!strcmp(a, "--clip")) o->clip = parse_num(a, v, 0, 1e9);
        else if (!strcmp(a, "--seed"))
            o->seed = (uint64_t)parse_int(a, v, 0, 0x7fffffffL);
        else if (!strcmp(a, "--batch"))
            o->batch = (int)parse_int(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--seq"))
            o->seq = (int)parse_int(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--eval-every"))
            o->eval_every = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--eval-batches"))
            o->eval_batches = (int)parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--log-every"))
            o->log_every = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--save")) o->save = v;
        else if (!strcmp(a, "--save-dtype")) {
            if (!strcmp(v, "f32")) o->save_dtype = OWL_DTYPE_F32;
            else if (!strcmp(v, "bf16")) o->save_dtype = OWL_DTYPE_BF16;
            else if (!strcmp(v, "f16")) o->save_dtype = OWL_DTYPE_F16;
            else die("--save-dtype %s: expected f32, bf16 or f16", v);
        }
        else if (!strcmp(a, "--save-every"))
            o->save_every = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--stop-at"))
            o->stop_at = (int)parse_int(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--resume")) o->resume = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu")) o->cuda = 0;
            else if (!strcmp(v, "cuda")) o->cuda = 1;
            else die("--device %s: expected cpu or cuda", v);
        }
        else die("unknown flag %s (see --help)", a);
    }
    if (o->data && o->ids)
        die("--data and --ids exclude each other");
    if (o->min_lr > o->lr)
        die("--min-lr %g is above --lr %g", o->min_lr, o->lr);
    if ((o->save_every || o->stop_at) && !o->save)
        die("--save-every and --stop-at need --save DIR");
    if (o->compare && (o->save || o->resume))
        die("--compare does not save or resume");
    if (o->steps == 0 && (o->compare || o->resume || o->cuda))
        die("--steps 0 evaluates a model (--model, with --save to convert "
            "it): not with --compare, --resume or --device cuda");
#ifndef LLAMA_HAVE_CUDA
    if (o->cuda)
        die("--device cuda: this build has no CUDA support (configure with "
            "-Dcuda=enabled)");
#endif
    if (o->recompute && !o->cuda)
        die("--recompute applies to --device cuda");
    if (o->cuda && (o->compare || o->save || o->resume))
        die("--device cuda trains one method without checkpoints: drop "
            "--compare, --save and --resume");
}

/* ------------------------------------------------------------------ */
/* Model                                                               */
/* ------------------------------------------------------------------ */

/* The built-in tiny model: byte vocabulary, grouped-query attention. */
static llama_config tiny_config(int seq)
{
    llama_config c = {.dim = 96, .hidden_dim = 256, .n_layers = 4,
                      .n_heads = 4, .n_kv_heads = 2, .vocab_size = 256,
                      .seq_len = seq, .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f, .tied = 0};
    return c;
}

/* The trainer keeps per-layer values in fixed arrays of this size. */
enum { MAX_LAYERS = 256 };

static void check_layers(const llama_model *m)
{
    if (m->cfg.n_layers > MAX_LAYERS)
        die("the model has %d layers; the trainer handles up to %d",
            m->cfg.n_layers, MAX_LAYERS);
}

/* A checkpoint (HF directory, GGUF file or llama2.c file) in a model
 * sized for B sequences of T tokens: its context length sizes no
 * parameter, so the activations are allocated for the run's T only. *x:
 * its tokenizer and what a save carries (ckpt_model.h), read now, since
 * a save may replace the very directory. */
static void load_model(const char *path, int B, int T, llama_model *m,
                       ckpt_extras *x)
{
    char err[1024];
    if (ckpt_load_model(path, m, B, T, x, err, sizeof err) != 0)
        die("loading %s: %s", path, err);
    if (m->cfg.seq_len < T)
        die("--seq %d is longer than the context length of %s (%d tokens): "
            "lower --seq", T, path, m->context_len);
    check_layers(m);
}

/* The flags' model; *x zeroed for the fresh tiny one. */
static void make_model(const options *o, llama_model *m, ckpt_extras *x)
{
    char err[512];
    memset(x, 0, sizeof *x);
    if (o->model) {
        load_model(o->model, o->batch, o->seq, m, x);
        return;
    }
    llama_config cfg = tiny_config(o->seq);
    if (llama_create(m, &cfg, o->batch, err, sizeof err) != 0)
        die("llama_create: %s", err);
    llama_init_random(m, o->seed, 0.05f);
}

static void print_model(const llama_model *m)
{
    const llama_config *c = &m->cfg;
    printf("model: %d layers, dim %d, MLP %d, %d heads (%d kv), vocab %d, "
           "%s head, %.2fM parameters\n", c->n_layers, c->dim, c->hidden_dim,
           c->n_heads, c->n_kv_heads, c->vocab_size,
           c->tied ? "tied" : "untied", llama_param_count(c) / 1e6);
}

/* ------------------------------------------------------------------ */
/* Data                                                                */
/* ------------------------------------------------------------------ */

/* Seeds of the three uses of the data, so that training batches,
 * held-out batches and calibration batches never coincide. */
#define EVAL_SALT 0x6576616cull
#define CALIB_SALT 0x63616c69ull

/* --data through the model's tokenizer: the tokenizer, and how the text
 * came out (the bytes the vocabulary cannot represent are left out, and
 * counted, as Hugging Face's tokenizer leaves them out). */
static void load_tokenized(const options *o, const ckpt_extras *x,
                           data_ids *all)
{
    char err[1024], desc[256];
    size_t bytes, dropped;
    tok_describe(x->tok, desc, sizeof desc);
    printf("tokenizer: %s (from %s)\n", desc, x->tok_from);
    if (data_load_tokenized(o->data, x->tok, all, &bytes, &dropped, err,
                            sizeof err) != 0)
        die("%s", err);
    printf("tokenized %s: %zu bytes -> %zu tokens (%.2f bytes a token)",
           o->data, bytes, all->n, (double)bytes / (double)all->n);
    if (dropped)
        printf("; %zu byte(s) without a symbol in the vocabulary left out",
               dropped);
    printf("\n");
}

static void load_data(const options *o, const llama_model *m,
                      const ckpt_extras *x, data_ids *all, data_ids *train,
                      data_ids *held)
{
    char err[512];
    int rc = 0;
    if (o->data && x->tok) {
        load_tokenized(o, x, all);
    } else if (o->data && x->tok_error[0]) {
        /* Bytes would be ids of the wrong meaning for this vocabulary. */
        die("--data %s: the model's tokenizer cannot be used: %s; tokenize "
            "the text elsewhere and pass the ids with --ids", o->data,
            x->tok_error);
    } else if (o->data) {
        printf("tokenizer: bytes (ids 0..255: the model has none)\n");
        rc = data_load_text(o->data, all, err, sizeof err);
    } else if (o->ids)
        rc = data_load_ids(o->ids, o->id_bits, all, err, sizeof err);
    else
        rc = data_synthetic(o->seed, o->synthetic, 400000, all, err,
                            sizeof err);
    if (rc != 0)
        die("%s", err);
    int32_t mx = data_max_id(all);
    if (mx >= m->cfg.vocab_size)
        die("the data has id %ld, the model's vocabulary is %d", (long)mx,
            m->cfg.vocab_size);
    if (data_split(all, o->heldout, (size_t)o->seq + 1, train, held, err,
                   sizeof err) != 0)
        die("%s", err);
    printf("data: %s, %zu tokens (%zu train, %zu held out)\n",
           o->data ? o->data : o->ids ? o->ids
           : o->synthetic == DATA_SYNTH_SHIFTED ? "synthetic language, shifted"
           : "synthetic language", all->n,
           train->n, held->n);
}

/* Mean loss over n held-out batches (the same batches at every call). */
static double eval_loss(llama_model *m, const data_ids *held, int B, int T,
                        int n, uint64_t seed, int32_t *in, int32_t *tg)
{
    char err[256];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        if (data_batch(held, B, T, seed ^ EVAL_SALT, (uint64_t)i, in, tg, err,
                       sizeof err) != 0)
            die("%s", err);
        float loss = llama_forward(m, in, tg, B, T, NULL, NULL);
        if (!isfinite(loss))
            die("held-out loss is %g", loss);
        sum += loss;
    }
    return sum / n;
}

/* ------------------------------------------------------------------ */
/* LOD: each layer's outlier ratio from calibration batches            */
/* ------------------------------------------------------------------ */

/* The forward pass's statistics hook accumulates each linear layer's
 * squared input column norms over the calibration batches; then
 * owl_lod_compute pools each layer's seven matrices, each with its own
 * input's statistic. */
static void compute_lod(owl_context *ctx, llama_model *m, const data_ids *d,
                        int B, int T, int batches, double M, uint64_t seed,
                        double *ratio)
{
    const llama_config *c = &m->cfg;
    int L = c->n_layers, dim = c->dim, hid = c->hidden_dim;
    int qdim = m->head_dim * c->n_heads, kvdim = m->head_dim * c->n_kv_heads;
    double *sums = calloc((size_t)L * (2 * dim + qdim + hid), sizeof *sums);
    owl_tensor *t = malloc(4 * (size_t)L * sizeof *t);
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    if (!sums || !t || !in || !tg)
        die("out of memory for the LOD statistics");
    llama_act_stats st = {ctx, t, t + L, t + 2 * L, t + 3 * L};
    double *at = sums;
    for (int l = 0; l < L; l++) {
        owl_tensor_init(&st.attn_in[l], at, OWL_DTYPE_F64, 1, dim); at += dim;
        owl_tensor_init(&st.attn_out[l], at, OWL_DTYPE_F64, 1, qdim); at += qdim;
        owl_tensor_init(&st.mlp_in[l], at, OWL_DTYPE_F64, 1, dim); at += dim;
        owl_tensor_init(&st.mlp_mid[l], at, OWL_DTYPE_F64, 1, hid); at += hid;
    }
    char err[256];
    for (int i = 0; i < batches; i++) {
        if (data_batch(d, B, T, seed ^ CALIB_SALT, (uint64_t)i, in, tg, err,
                       sizeof err) != 0)
            die("%s", err);
        llama_forward(m, in, NULL, B, T, NULL, &st);
    }
    for (int l = 0; l < L; l++) {
        llama_layer *w = &m->w.layers[l];
        owl_tensor W[7], S[7];
        owl_tensor_init(&W[0], w->wq, OWL_DTYPE_F32, qdim, dim);
        owl_tensor_init(&W[1], w->wk, OWL_DTYPE_F32, kvdim, dim);
        owl_tensor_init(&W[2], w->wv, OWL_DTYPE_F32, kvdim, dim);
        owl_tensor_init(&W[3], w->wo, OWL_DTYPE_F32, dim, qdim);
        owl_tensor_init(&W[4], w->w_gate, OWL_DTYPE_F32, hid, dim);
        owl_tensor_init(&W[5], w->w_up, OWL_DTYPE_F32, hid, dim);
        owl_tensor_init(&W[6], w->w_down, OWL_DTYPE_F32, dim, hid);
        S[0] = S[1] = S[2] = st.attn_in[l];
        S[3] = st.attn_out[l];
        S[4] = S[5] = st.mlp_in[l];
        S[6] = st.mlp_mid[l];
        OWL_CHECK(ctx, owl_lod_compute(ctx, W, S, 7, M, &ratio[l]));
    }
    free(sums);
    free(t);
    free(in);
    free(tg);
}

/* The sampler needs at least gamma layers with a positive weight. A small
 * or barely trained model can have fewer layers with outliers above M;
 * then every layer gets a floor of a tenth of the smallest positive ratio
 * (or 1 when none has any), said aloud, so that the draw stays weighted
 * by the ratios where they exist. */
static void lod_weights(const double *ratio, int L, int gamma, double *w)
{
    int positive = 0;
    double smallest = INFINITY;
    for (int l = 0; l < L; l++)
        if (ratio[l] > 0) {
            positive++;
            smallest = fmin(smallest, ratio[l]);
        }
    double floor_w = positive >= gamma ? 0.0 : positive ? smallest / 10 : 1.0;
    if (floor_w > 0)
        printf("LOD: only %d layer(s) have outliers above M, fewer than "
               "gamma = %d; every layer's weight gets a floor of %g\n",
               positive, gamma, floor_w);
    for (int l = 0; l < L; l++)
        w[l] = ratio[l] + floor_w;
}

/* Each layer's ratio with its sampling probability p_l and inclusion
 * probability, as a sampler with these options computes them. */
static void print_lod(owl_context *ctx, const owl_sampler_options *so,
                      const double *ratio, int L)
{
    owl_sampler *s = NULL;
    double p[MAX_LAYERS], pi[MAX_LAYERS];
    OWL_CHECK(ctx, owl_sampler_create(ctx, so, &s));
    OWL_CHECK(ctx, owl_sampler_probabilities(s, p, pi));
    owl_sampler_free(s);
    for (int l = 0; l < L; l++)
        printf("  layer %2d: LOD ratio %.5f  p_l %.3f  inclusion %.3f\n", l,
               ratio[l], p[l], pi[l]);
}

/* ------------------------------------------------------------------ */
/* Optimizer                                                           */
/* ------------------------------------------------------------------ */

static void add_param(owl_context *ctx, owl_optimizer *opt, uint64_t layer,
                      float *w, float *g, int64_t rows, int64_t cols,
                      int32_t lowrank)
{
    owl_tensor tw, tg;
    owl_tensor_init(&tw, w, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, rows, cols);
    OWL_CHECK(ctx, owl_optimizer_add_param(opt, layer, &tw, &tg, lowrank, NULL));
}

/* Per decoder layer: the seven projection matrices on the low-rank path,
 * the two RMSNorm gains in full rank; then the embeddings, final norm and
 * LM head, trained at every step. */
static void register_params(owl_context *ctx, owl_optimizer *opt,
                            llama_model *m)
{
    const llama_config *c = &m->cfg;
    int64_t dim = c->dim, hid = c->hidden_dim, vocab = c->vocab_size;
    int64_t qdim = (int64_t)m->head_dim * c->n_heads;
    int64_t kvdim = (int64_t)m->head_dim * c->n_kv_heads;
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *w = &m->w.layers[l], *g = &m->g.layers[l];
        uint64_t L = (uint64_t)l;
        add_param(ctx, opt, L, w->wq, g->wq, qdim, dim, 1);
        add_param(ctx, opt, L, w->wk, g->wk, kvdim, dim, 1);
        add_param(ctx, opt, L, w->wv, g->wv, kvdim, dim, 1);
        add_param(ctx, opt, L, w->wo, g->wo, dim, qdim, 1);
        add_param(ctx, opt, L, w->w_gate, g->w_gate, hid, dim, 1);
        add_param(ctx, opt, L, w->w_up, g->w_up, hid, dim, 1);
        add_param(ctx, opt, L, w->w_down, g->w_down, dim, hid, 1);
        add_param(ctx, opt, L, w->rms_att, g->rms_att, 1, dim, 0);
        add_param(ctx, opt, L, w->rms_ffn, g->rms_ffn, 1, dim, 0);
    }
    add_param(ctx, opt, OWL_LAYER_ALWAYS, m->w.embed, m->g.embed, vocab, dim, 0);
    add_param(ctx, opt, OWL_LAYER_ALWAYS, m->w.rms_final, m->g.rms_final, 1,
              dim, 0);
    if (!c->tied) /* a tied head is the embedding, registered above */
        add_param(ctx, opt, OWL_LAYER_ALWAYS, m->w.head, m->g.head, vocab,
                  dim, 0);
}

/* The optimizer for method o->method. lod_w: the sampler's weights for the
 * OWLORE methods (NULL otherwise). */
static owl_optimizer *make_optimizer(owl_context *ctx, const options *o,
                                     llama_model *m, const double *lod_w,
                                     owl_sampler_options *so)
{
    int L = m->cfg.n_layers;
    if (o->gamma > L)
        die("--gamma %d is more than the model's %d layers", o->gamma, L);
    owl_galore_options go;
    owl_adamw_options ao;
    owl_optimizer_options oo;
    OWL_CHECK(ctx, owl_sampler_options_init(so, sizeof *so));
    OWL_CHECK(ctx, owl_galore_options_init(&go, sizeof go));
    OWL_CHECK(ctx, owl_adamw_options_init(&ao, sizeof ao));
    OWL_CHECK(ctx, owl_optimizer_options_init(&oo, sizeof oo));
    so->gamma = (uint64_t)o->gamma;
    so->period = (uint64_t)o->period;
    so->seed = o->seed;
    if (uses_lod(o->method)) {
        so->weight_mode = OWL_WEIGHTS_OWLORE;
        so->weights = lod_w;
    }
    go.rank = (uint64_t)o->rank;
    go.update_gap = (uint64_t)o->update_gap;
    go.scale = o->galore_scale;
    ao.moment_dtype = o->moments;
    oo.method = o->method;
    oo.frozen_policy = o->policy;
    oo.num_layers = (uint64_t)L;
    oo.sampler = so;
    oo.galore = &go;
    oo.adamw = &ao;
    oo.max_grad_norm = o->clip;
    owl_optimizer *opt = NULL;
    OWL_CHECK(ctx, owl_optimizer_create(ctx, &oo, &opt));
    register_params(ctx, opt, m);
    return opt;
}

static uint64_t optimizer_bytes(owl_context *ctx, const owl_optimizer *opt)
{
    owl_memory_usage u;
    OWL_CHECK(ctx, owl_memory_usage_init(&u, sizeof u));
    OWL_CHECK(ctx, owl_optimizer_memory(opt, &u));
    return u.host_moments + u.host_projectors + u.device_moments +
           u.device_projectors;
}

/* ------------------------------------------------------------------ */
/* Checkpoints: weights, optimizer state, trainer state                */
/* ------------------------------------------------------------------ */

/* The trainer's own state: the next step, and what must match to resume
 * (method, seed, the LOD weights the sampler was created with). */
typedef struct trainer_state {
    int step;
    owl_method method;
    uint64_t seed;
    int num_layers;
    double lod_w[MAX_LAYERS];
} trainer_state;

static void join(char *out, size_t len, const char *dir, const char *file)
{
    if ((size_t)snprintf(out, len, "%s/%s", dir, file) >= len)
        die("path %s/%s is too long", dir, file);
}

/* Writes the whole checkpoint directory o->save: a complete Hugging Face
 * model (model.safetensors in --save-dtype, config.json kept from the
 * source, its tokenizer files), optimizer.state and trainer.txt (not
 * when opt is NULL: a model that was not trained). All of it
 * goes into a staging directory first, which then replaces the old
 * checkpoint in one atomic exchange (ckpt_dir.h): a crash at any point
 * leaves the previous checkpoint or this one, never a mixture of the
 * two, so --resume always reads weights, optimizer and step of one save. */
static void save_checkpoint(owl_context *ctx, const options *o,
                            const llama_model *m, const ckpt_source *src,
                            const owl_optimizer *opt,
                            const trainer_state *ts)
{
    char path[4096], err[1024];
    ckpt_stage stage;
    if (ckpt_stage_begin(&stage, o->save, err, sizeof err) != 0)
        die("saving: %s", err);
    if (ckpt_save_hf(stage.tmp, m, o->save_dtype, src, err, sizeof err)) {
        ckpt_stage_abort(&stage);
        die("saving %s: %s", o->save, err);
    }
    if (!opt) {
        if (ckpt_stage_commit(&stage, err, sizeof err) != 0)
            die("saving: %s", err);
        return;
    }
    join(path, sizeof path, stage.tmp, "optimizer.state");
    owl_status st = owl_optimizer_save_file(opt, path);
    if (st != OWL_OK) {
        ckpt_stage_abort(&stage);
        die("saving %s: owl_optimizer_save_file: %s: %s", o->save,
            owl_status_name(st), owl_context_last_error(ctx));
    }
    join(path, sizeof path, stage.tmp, "trainer.txt");
    FILE *f = fopen(path, "w");
    int ok = f != NULL;
    if (ok) {
        fprintf(f, "step %d\nmethod %s\nseed %llu\nlayers %d\nlod_weights",
                ts->step, method_name(ts->method),
                (unsigned long long)ts->seed, ts->num_layers);
        for (int l = 0; l < ts->num_layers; l++)
            fprintf(f, " %.17g", ts->lod_w[l]);
        fprintf(f, "\n");
        ok = !ferror(f);
        ok = fclose(f) == 0 && ok;
    }
    if (!ok) {
        int e = errno;
        ckpt_stage_abort(&stage);
        die("cannot write %s: %s", path, strerror(e));
    }
    if (ckpt_stage_commit(&stage, err, sizeof err) != 0)
        die("saving: %s", err);
}

static void read_trainer_state(const char *dir, trainer_state *ts)
{
    char path[4096], name[32], err[512], *text;
    size_t len;
    join(path, sizeof path, dir, "trainer.txt");
    if (file_read_all(path, (size_t)1 << 20, &text, &len, err, sizeof err))
        die("%s", err);
    unsigned long long seed;
    int used = 0;
    int ok = sscanf(text, " step %d method %31s seed %llu layers %d "
                    "lod_weights%n", &ts->step, name, &seed, &ts->num_layers,
                    &used) == 4 && used > 0 &&
             ts->num_layers >= 1 && ts->num_layers <= MAX_LAYERS;
    const char *at = text + used;
    for (int l = 0; ok && l < ts->num_layers; l++) {
        int n = 0;
        ok = sscanf(at, "%lf%n", &ts->lod_w[l], &n) == 1;
        at += n;
    }
    free(text);
    int k = 0;
    while (ok && k < NUM_METHODS && strcmp(methods[k].name, name))
        k++;
    if (!ok || k == NUM_METHODS)
        die("%s is not a trainer state file", path);
    ts->method = methods[k].method;
    ts->seed = seed;
}

/* ------------------------------------------------------------------ */
/* The training loop                                                   */
/* ------------------------------------------------------------------ */

/* Linear warm-up to lr, then linear decay to min_lr at the last step. */
static double lr_at(const options *o, int step)
{
    if (step < o->warmup)
        return o->lr * (step + 1) / o->warmup;
    int span = o->steps - o->warmup;
    double frac = span > 1 ? (double)(step - o->warmup) / (span - 1) : 1.0;
    return o->lr + (o->min_lr - o->lr) * frac;
}

/* What a run records: per step the training loss and (at evaluations)
 * the held-out loss, NaN elsewhere; and the totals. */
typedef struct run_log {
    double *train, *eval; /* [steps] */
    double final_eval, wall_s;
    uint64_t peak_bytes;
} run_log;

/* One step's line: step (counting from 1), loss, learning rate, tokens
 * per second, the active layers, the optimizer's state, and the held-out
 * loss when it was evaluated. */
/* One line of progress; the GPU path (cuda/train_gpu.c) prints the same. */
void train_print_step(int step, double loss, double lr, double tok_s,
                      const uint8_t *mask, int L, uint64_t bytes, double eval)
{
    char layers[1024];
    size_t n = 0;
    layers[0] = '\0';
    for (int l = 0; l < L && n + 8 < sizeof layers; l++)
        if (mask[l])
            n += (size_t)snprintf(layers + n, sizeof layers - n, "%sL%d",
                                  n ? "," : "", l);
    printf("step %5d | loss %.4f | lr %.2e | %8.0f tok/s | layers %-11s | "
           "opt state %9.1f KiB", step, loss, lr, tok_s, layers,
           bytes / 1024.0);
    if (isfinite(eval))
        printf(" | eval %.4f", eval);
    printf("\n");
}

/* Trains m with opt from step `start` to o->steps (or o->stop_at). */
static void train(owl_context *ctx, owl_optimizer *opt, llama_model *m,
                  const options *o, const data_ids *trn, const data_ids *held,
                  int start, trainer_state *ts, const ckpt_source *src,
                  run_log *log)
{
    int B = o->batch, T = o->seq, L = m->cfg.n_layers;
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    uint8_t *mask = malloc((size_t)L);
    if (!in || !tg || !mask)
        die("out of memory for a batch");
    char err[512];
    int end = o->stop_at && o->stop_at < o->steps ? o->stop_at : o->steps;
    double t_start = now_s(), last_eval = NAN;
    log->peak_bytes = 0;
    for (int step = start; step < end; step++) {
        double t0 = now_s();
        /* 1. the layers that train now, 2. forward and backward with
         * gradients for exactly those, 3. the optimizer step. */
        OWL_CHECK(ctx, owl_optimizer_active_layers(opt, mask, (uint64_t)L, NULL));
        if (data_batch(trn, B, T, o->seed, (uint64_t)step, in, tg, err,
                       sizeof err) != 0)
            die("%s", err);
        float loss = llama_forward(m, in, tg, B, T, NULL, NULL);
        if (!isfinite(loss))
            die("step %d: the loss is %g", step, loss);
        llama_trainable tr = {mask, 1, 1};
        llama_backward(m, &tr);
        double lr = lr_at(o, step);
        OWL_CHECK(ctx, owl_optimizer_step(opt, lr));
        double dt = now_s() - t0;

        uint64_t bytes = optimizer_bytes(ctx, opt);
        if (bytes > log->peak_bytes)
            log->peak_bytes = bytes;
        log->train[step] = loss;
        int last = step + 1 == end;
        if ((step + 1) % o->eval_every == 0 || last) {
            last_eval = eval_loss(m, held, B, T, o->eval_batches, o->seed, in,
                                  tg);
            log->eval[step] = last_eval;
        }
        if ((step + 1) % o->log_every == 0 || step == start || last ||
            isfinite(log->eval[step]))
            train_print_step(step + 1, loss, lr, B * T / dt, mask, L, bytes,
                       log->eval[step]);
        if (o->save && ts && (last || (o->save_every &&
                                       (step + 1) % o->save_every == 0))) {
            ts->step = step + 1;
            save_checkpoint(ctx, o, m, src, opt, ts);
            printf("saved step %d to %s\n", step + 1, o->save);
        }
    }
    log->final_eval = last_eval;
    log->wall_s = now_s() - t_start;
    free(in);
    free(tg);
    free(mask);
}

static void log_alloc(run_log *log, int steps)
{
    log->train = malloc((size_t)steps * sizeof *log->train);
    log->eval = malloc((size_t)steps * sizeof *log->eval);
    if (!log->train || !log->eval)
        die("out of memory for the loss log");
    for (int i = 0; i < steps; i++)
        log->train[i] = log->eval[i] = NAN;
}

static void log_free(run_log *log)
{
    free(log->train);
    free(log->eval);
}

/* LOD ratios of m on d, printed with the sampling probabilities, and the
 * sampler weights derived from them. */
static void lod_for(owl_context *ctx, const options *o, llama_model *m,
                    const data_ids *d, double *w)
{
    int L = m->cfg.n_layers;
    double ratio[MAX_LAYERS];
    double t0 = now_s();
    compute_lod(ctx, m, d, o->batch, o->seq, o->calib_batches, o->lod_M,
                o->seed, ratio);
    lod_weights(ratio, L, o->gamma, w);
    owl_sampler_options so;
    OWL_CHECK(ctx, owl_sampler_options_init(&so, sizeof so));
    so.num_layers = (uint64_t)L;
    so.gamma = (uint64_t)o->gamma;
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    so.weights = w;
    printf("LOD over %d calibration batches (M = %g, %.2f s):\n",
           o->calib_batches, o->lod_M, now_s() - t0);
    print_lod(ctx, &so, ratio, L);
}

#ifdef LLAMA_HAVE_CUDA
/* --device cuda: the model, data and LOD weights prepared here train on
 * the GPU (cuda/train_gpu.c). */
static void run_gpu(const options *o, const llama_model *m,
                    const data_ids *trn, const data_ids *held,
                    const double *lod_w)
{
    if (o->gamma > m->cfg.n_layers)
        die("--gamma %d is more than the model's %d layers", o->gamma,
            m->cfg.n_layers);
    double *lr = malloc((size_t)o->steps * sizeof *lr);
    if (!lr)
        die("out of memory");
    for (int s = 0; s < o->steps; s++)
        lr[s] = lr_at(o, s);
    train_gpu_run r = {
        .model = m, .train = trn, .held = held, .method = o->method,
        .gamma = o->gamma, .period = o->period, .lod_weights = lod_w,
        .rank = o->rank, .update_gap = o->update_gap,
        .galore_scale = o->galore_scale, .moments = o->moments,
        .policy = o->policy, .clip = o->clip, .lr = lr, .steps = o->steps,
        .batch = o->batch, .seq = o->seq, .seed = o->seed,
        .eval_seed = o->seed ^ EVAL_SALT, .eval_every = o->eval_every,
        .eval_batches = o->eval_batches, .log_every = o->log_every,
        .recompute = o->recompute, .device = 0};
    char err[1024];
    printf("%s on the GPU\n", method_name(o->method));
    if (train_gpu(&r, err, sizeof err) != 0)
        die("%s", err);
    free(lr);
}
#endif

/* --steps 0: the held-out loss of the model as loaded, and with --save
 * the model as a Hugging Face directory (a GGUF file converted, with its
 * tokenizer); there is no optimizer or trainer state to save. */
static void evaluate_only(owl_context *ctx, const options *o, llama_model *m,
                          const ckpt_source *src, const data_ids *held)
{
    int B = o->batch, T = o->seq;
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    if (!in || !tg)
        die("out of memory");
    double t0 = now_s();
    double loss = eval_loss(m, held, B, T, o->eval_batches, o->seed, in, tg);
    printf("held-out loss %.6f (perplexity %.2f) over %d batches of %d x %d "
           "tokens, %.1f s; no training (--steps 0)\n", loss, exp(loss),
           o->eval_batches, B, T, now_s() - t0);
    free(in);
    free(tg);
    if (o->save) {
        save_checkpoint(ctx, o, m, src, NULL, NULL);
        printf("saved the model to %s\n", o->save);
    }
}

/* One method on the flags' model and data (--method), with --save and
 * --resume. */
static void run_single(owl_context *ctx, options *o)
{
    llama_model m;
    ckpt_extras x;
    trainer_state ts = {0};
    char err[1024];
    /* A --save that is bound to fail is refused now, not after the run. */
    if (o->save && ckpt_dir_check(o->save, err, sizeof err) != 0)
        die("--save: %s", err);
    if (o->resume) {
        read_trainer_state(o->resume, &ts);
        if (ts.method != o->method || ts.seed != o->seed)
            printf("resume: the run was %s with seed %llu; continuing it so\n",
                   method_name(ts.method), (unsigned long long)ts.seed);
        o->method = ts.method;
        o->seed = ts.seed;
        load_model(o->resume, o->batch, o->seq, &m, &x);
    } else {
        make_model(o, &m, &x);
    }
    print_model(&m);
    /* What a save carries: the model directory's config.json and
     * tokenizer files, or those made from a GGUF file's metadata. */
    const ckpt_source *src = &x.source;
    if (o->save) {
        char *text;
        size_t len;
        if (ckpt_config_text(&m, o->save_dtype, src, &text, &len, err,
                             sizeof err) != 0)
            die("--save: %s", err);
        free(text);
    }
    int L = m.cfg.n_layers;
    data_ids all, trn, held;
    load_data(o, &m, &x, &all, &trn, &held);
    if (o->steps == 0) {
        evaluate_only(ctx, o, &m, src, &held);
        ckpt_extras_free(&x);
        data_free(&all);
        llama_destroy(&m);
        return;
    }

    double *lod_w = NULL;
    if (uses_lod(o->method)) {
        lod_w = ts.lod_w;
        if (o->resume) {
            if (ts.num_layers != L)
                die("%s has %d LOD weights, the model %d layers", o->resume,
                    ts.num_layers, L);
        } else {
            lod_for(ctx, o, &m, &trn, lod_w);
        }
    }
    ts.method = o->method;
    ts.seed = o->seed;
    ts.num_layers = L;
#ifdef LLAMA_HAVE_CUDA
    if (o->cuda) {
        run_gpu(o, &m, &trn, &held, lod_w);
        ckpt_extras_free(&x);
        data_free(&all);
        llama_destroy(&m);
        return;
    }
#endif
    owl_sampler_options so;
    owl_optimizer *opt = make_optimizer(ctx, o, &m, lod_w, &so);
    if (o->resume) {
        char path[4096];
        join(path, sizeof path, o->resume, "optimizer.state");
        /* The library's reader opens the file before checking its type;
         * a FIFO there would block it, so look first. */
        uint64_t size;
        int fd = file_open_regular(path, &size, err, sizeof err);
        if (fd < 0)
            die("%s", err);
        close(fd);
        OWL_CHECK(ctx, owl_optimizer_load_file(opt, path));
        if (owl_optimizer_step_index(opt) != (uint64_t)ts.step)
            die("%s is at step %llu, trainer.txt says %d", path,
                (unsigned long long)owl_optimizer_step_index(opt), ts.step);
        printf("resumed %s at step %d\n", o->resume, ts.step);
    }
    int B = o->batch, T = o->seq;
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    if (!in || !tg)
        die("out of memory");
    double before = eval_loss(&m, &held, B, T, o->eval_batches, o->seed, in, tg);
    printf("%s: %d steps of %d x %d tokens, held-out loss %.4f at step %d\n",
           method_name(o->method), o->steps, B, T, before, ts.step);
    run_log log;
    log_alloc(&log, o->steps);
    train(ctx, opt, &m, o, &trn, &held, ts.step, &ts, src, &log);
    printf("\nsummary: %s, held-out loss %.4f -> %.4f, %.1f s, peak optimizer "
           "state %.1f KiB\n", method_name(o->method), before, log.final_eval,
           log.wall_s, log.peak_bytes / 1024.0);
    log_free(&log);
    free(in);
    free(tg);
    owl_optimizer_free(opt);
    ckpt_extras_free(&x);
    data_free(&all);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* --compare: the five methods from one init                           */
/* ------------------------------------------------------------------ */

/* Mean of the last `w` finite values up to i: smooths the per-step
 * training loss for the plot. */
static double trailing_mean(const double *y, int i, int w)
{
    double s = 0;
    int n = 0;
    for (int j = i; j >= 0 && j > i - w; j--)
        if (isfinite(y[j])) {
            s += y[j];
            n++;
        }
    return n ? s / n : NAN;
}

static void run_compare(owl_context *ctx, options *o)
{
    llama_model m;
    ckpt_extras extras;
    make_model(o, &m, &extras);
    print_model(&m);
    int S = o->steps;
    data_ids all, trn, held;
    load_data(o, &m, &extras, &all, &trn, &held);
    float *init = malloc(m.w.count * sizeof *init);
    if (!init)
        die("out of memory");
    memcpy(init, m.w.base, m.w.count * sizeof *init);
    double lod_w[MAX_LAYERS];
    lod_for(ctx, o, &m, &trn, lod_w);
    {
        int32_t *in = malloc((size_t)o->batch * o->seq * sizeof *in);
        int32_t *tg = malloc((size_t)o->batch * o->seq * sizeof *tg);
        if (!in || !tg)
            die("out of memory");
        printf("held-out loss at the start: %.4f\n",
               eval_loss(&m, &held, o->batch, o->seq, o->eval_batches,
                         o->seed, in, tg));
        free(in);
        free(tg);
    }

    if (mkdir(o->out, 0777) != 0 && errno != EEXIST)
        die("cannot create %s: %s", o->out, strerror(errno));
    char path[4096], err[512];
    join(path, sizeof path, o->out, "compare.csv");
    FILE *csv = fopen(path, "w");
    if (!csv)
        die("cannot write %s: %s", path, strerror(errno));
    fprintf(csv, "step,method,train_loss,eval_loss\n");

    run_log logs[NUM_METHODS];
    for (int k = 0; k < NUM_METHODS; k++) {
        options mo = *o;
        mo.method = methods[k].method;
        memcpy(m.w.base, init, m.w.count * sizeof *init);
        owl_sampler_options so;
        owl_optimizer *opt = make_optimizer(ctx, &mo, &m,
                                            uses_lod(mo.method) ? lod_w : NULL,
                                            &so);
        printf("\n== %s ==\n", methods[k].name);
        log_alloc(&logs[k], S);
        train(ctx, opt, &m, &mo, &trn, &held, 0, NULL, NULL, &logs[k]);
        owl_optimizer_free(opt);
        for (int s = 0; s < S; s++) {
            fprintf(csv, "%d,%s,%.6f,", s + 1, methods[k].name,
                    logs[k].train[s]);
            if (isfinite(logs[k].eval[s]))
                fprintf(csv, "%.6f", logs[k].eval[s]);
            fprintf(csv, "\n");
        }
    }
    if (fclose(csv) != 0)
        die("cannot write %s", path);

    /* The plot: smoothed training loss (solid) and held-out loss (dashed,
     * dots) per method, one colour each. */
    double *x = malloc((size_t)S * sizeof *x);
    double *sm = malloc((size_t)NUM_METHODS * S * sizeof *sm);
    if (!x || !sm)
        die("out of memory");
    plot_series ps[2 * NUM_METHODS];
    for (int s = 0; s < S; s++)
        x[s] = s + 1;
    for (int k = 0; k < NUM_METHODS; k++) {
        for (int s = 0; s < S; s++)
            sm[(size_t)k * S + s] = trailing_mean(logs[k].train, s, 10);
        ps[2 * k] = (plot_series){methods[k].name, x, sm + (size_t)k * S,
                                  (size_t)S, k, 0};
        /* Held-out points only, joined: compact them. */
        size_t n = 0;
        double *ex = malloc((size_t)S * sizeof *ex);
        double *ey = malloc((size_t)S * sizeof *ey);
        if (!ex || !ey)
            die("out of memory");
        for (int s = 0; s < S; s++)
            if (isfinite(logs[k].eval[s])) {
                ex[n] = s + 1;
                ey[n++] = logs[k].eval[s];
            }
        ps[2 * k + 1] = (plot_series){NULL, ex, ey, n, k, 1};
    }
    join(path, sizeof path, o->out, "compare.svg");
    if (plot_svg(path, "Training loss (solid, 10-step mean) and held-out loss "
                 "(dashed)", "step", "loss", ps, 2 * NUM_METHODS, err,
                 sizeof err) != 0)
        die("%s", err);
    for (int k = 0; k < NUM_METHODS; k++) {
        free((void *)ps[2 * k + 1].x);
        free((void *)ps[2 * k + 1].y);
    }
    free(x);
    free(sm);

    printf("\n| method      | final eval loss | wall time (s) | peak optimizer "
           "state (KiB) |\n|-------------|-----------------|---------------|"
           "-----------------------------|\n");
    for (int k = 0; k < NUM_METHODS; k++)
        printf("| %-11s | %15.4f | %13.1f | %27.1f |\n", methods[k].name,
               logs[k].final_eval, logs[k].wall_s,
               logs[k].peak_bytes / 1024.0);
    printf("\nwrote %s/compare.csv and %s/compare.svg\n", o->out, o->out);
    for (int k = 0; k < NUM_METHODS; k++)
        log_free(&logs[k]);
    free(init);
    ckpt_extras_free(&extras);
    data_free(&all);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* The demonstration (no arguments)                                    */
/* ------------------------------------------------------------------ */

/* The first few lines of a synthetic corpus, indented. */
static void print_sample(const char *name, const data_ids *d)
{
    printf("  %s:", name);
    int lines = 0;
    for (size_t i = 0; i < d->n && lines < 4; i++) {
        if (i == 0 || d->ids[i - 1] == '\n')
            printf("%s", i ? "    " : " ");
        putchar(d->ids[i] == '\n' ? ' ' : (char)d->ids[i]);
        lines += d->ids[i] == '\n';
    }
    printf("...\n");
}

/* Pre-training with FULL on the synthetic language, then OWLORE
 * fine-tuning on its shifted variant (reversed word order, subtraction,
 * doubling): the fine-tune has a new task to learn, visible in the
 * held-out loss of the shifted corpus before and after. */
static void run_demo(owl_context *ctx)
{
    double t_start = now_s();
    char err[512];
    options pre = default_options();
    pre.method = OWL_METHOD_FULL;
    pre.steps = 1200;
    pre.lr = 3e-3;
    pre.min_lr = 3e-4;
    pre.warmup = 30;
    pre.eval_every = 300;
    pre.log_every = 100;
    options ft = default_options();
    ft.method = OWL_METHOD_OWLORE;
    ft.steps = 500;
    ft.gamma = 2;
    ft.period = 10;
    ft.rank = 8;
    ft.update_gap = 50;
    ft.lr = 3e-3;
    ft.min_lr = 3e-4;
    ft.warmup = 10;
    ft.eval_every = 100;
    ft.log_every = 25;

    llama_model m;
    ckpt_extras x;
    make_model(&pre, &m, &x); /* the tiny model: nothing extra */
    print_model(&m);
    data_ids base, shifted, btrain, bheld, strain, sheld;
    if (data_synthetic(pre.seed, DATA_SYNTH_BASE, 400000, &base, err,
                       sizeof err) != 0 ||
        data_synthetic(pre.seed, DATA_SYNTH_SHIFTED, 400000, &shifted, err,
                       sizeof err) != 0 ||
        data_split(&base, 0.1, (size_t)pre.seq + 1, &btrain, &bheld, err,
                   sizeof err) != 0 ||
        data_split(&shifted, 0.1, (size_t)pre.seq + 1, &strain, &sheld, err,
                   sizeof err) != 0)
        die("%s", err);
    printf("data: synthetic language (%zu bytes) and its shifted variant "
           "(%zu bytes), last 10%% held out\n", base.n, shifted.n);
    print_sample("base", &base);
    print_sample("shifted", &shifted);

    int B = pre.batch, T = pre.seq;
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    if (!in || !tg)
        die("out of memory");

    printf("\n== pre-training: FULL, %d steps on the synthetic language ==\n",
           pre.steps);
    owl_sampler_options so;
    owl_optimizer *opt = make_optimizer(ctx, &pre, &m, NULL, &so);
    run_log log;
    log_alloc(&log, pre.steps);
    train(ctx, opt, &m, &pre, &btrain, &bheld, 0, NULL, NULL, &log);
    owl_optimizer_free(opt);
    double pre_base = log.final_eval;
    uint64_t pre_bytes = log.peak_bytes;
    log_free(&log);

    double ft_before = eval_loss(&m, &sheld, B, T, ft.eval_batches, ft.seed,
                                 in, tg);
    printf("\n== fine-tuning: OWLORE (gamma %d, K %d, rank %d), %d steps on "
           "the shifted language ==\n", ft.gamma, ft.period, ft.rank, ft.steps);
    double lod_w[MAX_LAYERS];
    lod_for(ctx, &ft, &m, &strain, lod_w);
    opt = make_optimizer(ctx, &ft, &m, lod_w, &so);
    log_alloc(&log, ft.steps);
    train(ctx, opt, &m, &ft, &strain, &sheld, 0, NULL, NULL, &log);
    owl_optimizer_free(opt);
    double ft_after = log.final_eval;
    double base_after = eval_loss(&m, &bheld, B, T, ft.eval_batches, ft.seed,
                                  in, tg);
    printf("\nsummary\n");
    printf("  pre-training (FULL, %d steps): held-out loss on the base "
           "language %.4f\n", pre.steps, pre_base);
    printf("  fine-tuning (OWLORE, %d steps): held-out loss on the shifted "
           "language %.4f -> %.4f\n", ft.steps, ft_before, ft_after);
    printf("  held-out loss on the base language after fine-tuning: %.4f\n",
           base_after);
    printf("  optimizer state: %.1f KiB fine-tuning with OWLORE, %.1f KiB "
           "pre-training with FULL\n", log.peak_bytes / 1024.0,
           pre_bytes / 1024.0);
    printf("  total time %.1f s\n", now_s() - t_start);
    log_free(&log);
    free(in);
    free(tg);
    data_free(&base);
    data_free(&shifted);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines as they come */
    options o = default_options();
    parse_args(argc, argv, &o);
#ifdef LLAMA_HAVE_CUDA
    if (o.cuda) {
        /* Before any work: a machine without a GPU says so at once. */
        char err[512];
        if (train_gpu_check_device(0, err, sizeof err) != 0)
            die("--device cuda: %s", err);
        /* Data parallel: one rank speaks (errors still go to stderr). */
        if (train_gpu_rank() != 0 && !freopen("/dev/null", "w", stdout))
            die("cannot silence the output of rank %d", train_gpu_rank());
    }
#endif
    owl_context *ctx = NULL;
    owl_context_options co;
    if (owl_context_options_init(&co, sizeof co) != OWL_OK ||
        owl_context_create(&ctx, &co) != OWL_OK)
        die("cannot create a libowlore context");
    if (argc == 1)
        run_demo(ctx);
    else if (o.compare)
        run_compare(ctx, &o);
    else
        run_single(ctx, &o);
    owl_context_free(ctx);
    return 0;
}
