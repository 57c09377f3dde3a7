/*
 * Data parallelism for the LLaMa example on NCCL (dist.h).
 *
 * One process per GPU. Rank 0 creates the NCCL unique id and hands it to
 * the others through a file (dist_rendezvous.h); every rank then joins the
 * communicator with ncclCommInitRank on its current device. Each step the
 * gradients of the trainable tensors are averaged in place with one
 * all-reduce per tensor (ncclAvg in the tensor's own dtype), all of them
 * inside one ncclGroupStart/End so NCCL launches them together; the
 * collectives run on the model's stream, so they start after the backward
 * pass and the optimizer step enqueued after them sees the averages,
 * without any wait on the host.
 *
 * Every rank must make the same sequence of calls with the same tensors:
 * the active layers come from the sampler's seed and the step index, so
 * every rank binds the same layers and the tensor lists agree.
 *
 * Built without LLAMA_HAVE_NCCL (the CPU test of the rendezvous), creating
 * a communicator fails with a message; the id file and the environment
 * parsing work all the same.
 */
#include "dist.h"
#include "dist_rendezvous.h"
#include "stream_wait.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef LLAMA_HAVE_NCCL
#include <cuda_runtime_api.h>
/* nccl.h declares ncclGroupStart() and ncclGroupEnd() without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
/* ncclAvg, ncclBfloat16 and ncclCommFinalize */
#error "dist.c needs NCCL 2.14 or later"
#endif
#endif

#define ID_MAGIC "OWLNCCL1"
#define ID_MAX_BYTES 1024
#define POLL_NS 20000000L /* 20 ms between looks at the id file */

struct llama_dist {
    int rank, world;
    int device;   /* the CUDA device current at create */
    void *stream; /* where every collective runs */
    int broken;   /* a collective failed: only destroy is left */
    char err[512];
#ifdef LLAMA_HAVE_NCCL
    ncclComm_t comm;
#endif
};

static void set_msg(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* The id file                                                         */
/* ------------------------------------------------------------------ */

/* Layout: magic (8 bytes), world (int32), byte count (int32), the id. All
 * ranks run on one architecture, so native byte order is fine. */
typedef struct id_header {
    char magic[8];
    int32_t world;
    int32_t nbytes;
} id_header;

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Flushes the folder holding path, so the rename itself is durable. Not
 * every filesystem allows it; the rename is already atomic without it. */
static void fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof dir)
            return;
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int llama_dist_id_write(const char *path, int world, const void *bytes,
                        size_t n, char *err, size_t errlen)
{
    if (!path || !*path || !bytes || n == 0 || n > ID_MAX_BYTES || world < 1) {
        set_msg(err, errlen, "id file: bad arguments (path %s, %zu bytes, "
                "world %d)", path ? path : "NULL", n, world);
        return -1;
    }
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof tmp) {
        set_msg(err, errlen, "id file: path %s is too long", path);
        return -1;
    }
    id_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, ID_MAGIC, sizeof h.magic);
    h.world = world;
    h.nbytes = (int32_t)n;

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        set_msg(err, errlen, "id file: cannot create %s: %s", tmp,
                strerror(errno));
        return -1;
    }
    if (write_all(fd, &h, sizeof h) != 0 || write_all(fd, bytes, n) != 0 ||
        fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        set_msg(err, errlen, "id file: cannot write %s: %s", tmp, strerror(e));
        return -1;
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        set_msg(err, errlen, "id file: cannot close %s: %s", tmp, strerror(e));
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        set_msg(err, errlen, "id file: cannot rename %s to %s: %s", tmp, path,
                strerror(e));
        return -1;
    }
    fsync_parent(path);
    return 0;
}

/* Reads the whole file at fd (at most cap bytes); returns the count or -1. */
static ssize_t read_up_to(int fd, void *buf, size_t cap)
{
    char *p = buf;
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, p + got, cap - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int llama_dist_id_read(const char *path, int world, void *bytes, size_t n,
                       double timeout_s, char *err, size_t errlen)
{
    if (!path || !*path || !bytes || n == 0 || n > ID_MAX_BYTES ||
        world < 1 || !(timeout_s >= 0) || !isfinite(timeout_s)) {
        set_msg(err, errlen, "id file: bad arguments (path %s, %zu bytes, "
                "world %d, timeout %g s)", path ? path : "NULL", n, world,
                timeout_s);
        return -1;
    }
    const double deadline = monotonic_s() + timeout_s;
    int fd;
    for (;;) {
        fd = open(path, O_RDONLY);
        if (fd >= 0)
            break;
        if (errno != ENOENT) {
            set_msg(err, errlen, "id file: cannot open %s: %s", path,
                    strerror(errno));
            return -1;
        }
        if (monotonic_s() >= deadline) {
            set_msg(err, errlen, "id file: %s did not appear within %g s "
                    "(is rank 0 running, and is the path on a filesystem "
                    "every rank shares?)", path, timeout_s);
            return -1;
        }
        struct timespec ts = {0, POLL_NS};
        nanosleep(&ts, NULL);
    }
    /* One byte more than expected, to notice a longer file. */
    unsigned char buf[sizeof(id_header) + ID_MAX_BYTES + 1];
    ssize_t got = read_up_to(fd, buf, sizeof(id_header) + n + 1);
    int e = errno;
    close(fd);
    if (got < 0) {
        set_msg(err, errlen, "id file: cannot read %s: %s", path, strerror(e));
        return -1;
    }
    id_header h;
    if ((size_t)got < sizeof h) {
        set_msg(err, errlen, "id file: %s holds %zd bytes, not an id file",
                path, got);
        return -1;
    }
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, ID_MAGIC, sizeof h.magic) != 0) {
        set_msg(err, errlen, "id file: %s is not an id file (bad magic)",
                path);
        return -1;
    }
    if (h.nbytes != (int32_t)n) {
        set_msg(err, errlen, "id file: %s holds an id of %d bytes, expected "
                "%zu", path, (int)h.nbytes, n);
        return -1;
    }
    if ((size_t)got != sizeof h + n) {
        set_msg(err, errlen, "id file: %s is %s (%zd bytes of id, expected "
                "%zu)", path, (size_t)got < sizeof h + n ? "cut short" :
                "too long", (ssize_t)got - (ssize_t)sizeof h, n);
        return -1;
    }
    if (h.world != world) {
        set_msg(err, errlen, "id file: %s was written for %d ranks, this rank "
                "joins %d (a stale file of an earlier run? use a fresh path "
                "per job)", path, (int)h.world, world);
        return -1;
    }
    memcpy(bytes, buf + sizeof h, n);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Rank and world from the environment                                 */
/* ------------------------------------------------------------------ */

int llama_dist_parse_int(const char *name, const char *value, long lo,
                         long hi, int *out, char *err, size_t errlen)
{
    if (!value || !*value) {
        set_msg(err, errlen, "%s is empty", name);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0') {
        set_msg(err, errlen, "%s='%s' is not an integer", name, value);
        return -1;
    }
    if (v < lo || v > hi) {
        set_msg(err, errlen, "%s=%ld is outside [%ld, %ld]", name, v, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int llama_dist_from_env_msg(int *rank, int *world, int *local_rank,
                            char *err, size_t errlen)
{
    if (!rank || !world || !local_rank) {
        set_msg(err, errlen, "llama_dist_from_env: NULL output");
        return -1;
    }
    /* Our own names first, then torchrun's; each pair is taken whole. */
    static const char *const pairs[2][2] = {
        {"LLAMA_RANK", "LLAMA_WORLD_SIZE"},
        {"RANK", "WORLD_SIZE"},
    };
    int r = 0, w = 1, lr = 0, found = 0;
    for (int p = 0; p < 2 && !found; p++) {
        const char *rs = getenv(pairs[p][0]);
        const char *ws = getenv(pairs[p][1]);
        if (!rs && !ws)
            continue;
        if (!rs || !ws) {
            set_msg(err, errlen, "%s is set but %s is not",
                    rs ? pairs[p][0] : pairs[p][1],
                    rs ? pairs[p][1] : pairs[p][0]);
            return -1;
        }
        if (llama_dist_parse_int(pairs[p][1], ws, 1, INT_MAX, &w, err,
                                 errlen) != 0 ||
            llama_dist_parse_int(pairs[p][0], rs, 0, (long)w - 1, &r, err,
                                 errlen) != 0)
            return -1;
        found = 1;
    }
    const char *ls = getenv("LOCAL_RANK");
    if (ls) {
        if (llama_dist_parse_int("LOCAL_RANK", ls, 0, INT_MAX, &lr, err,
                                 errlen) != 0)
            return -1;
    } else {
        lr = r; /* one node: the rank is the device */
    }
    *rank = r;
    *world = w;
    *local_rank = lr;
    return 0;
}

int llama_dist_from_env(int *rank, int *world, int *local_rank)
{
    char err[256];
    if (llama_dist_from_env_msg(rank, world, local_rank, err, sizeof err) !=
        0) {
        /* dist.h's signature has no room for the message; the caller only
         * sees -1, so say why here. */
        fprintf(stderr, "llama_dist_from_env: %s\n", err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The communicator                                                    */
/* ------------------------------------------------------------------ */

int llama_dist_rank(const llama_dist *d) { return d ? d->rank : -1; }
int llama_dist_world(const llama_dist *d) { return d ? d->world : 0; }
const char *llama_dist_error(const llama_dist *d)
{
    return d ? d->err : "no communicator";
}

#ifndef LLAMA_HAVE_NCCL

int llama_dist_create(llama_dist **out, int rank, int world,
                      const char *id_path, double timeout_s, void *stream,
                      char *err, size_t errlen)
{
    (void)rank, (void)world, (void)id_path, (void)timeout_s, (void)stream;
    if (out)
        *out = NULL;
    set_msg(err, errlen, "data parallelism needs CUDA and NCCL; this build "
            "has no NCCL");
    return -1;
}

void llama_dist_destroy(llama_dist *d) { free(d); }

int llama_dist_allreduce_grads(llama_dist *d, llama_gpu *m)
{
    (void)m;
    if (d)
        set_msg(d->err, sizeof d->err, "built without NCCL");
    return -1;
}

int llama_dist_broadcast_weights(llama_dist *d, llama_gpu *m, int root)
{
    (void)m, (void)root;
    if (d)
        set_msg(d->err, sizeof d->err, "built without NCCL");
    return -1;
}

#else /* LLAMA_HAVE_NCCL */

/* "ncclAllReduce: unhandled cuda error (...): <NCCL's last message>" */
static void nccl_msg(char *err, size_t errlen, const char *what,
                     ncclResult_t r)
{
    const char *last = ncclGetLastError(NULL);
    set_msg(err, errlen, "%s: %s%s%s", what, ncclGetErrorString(r),
            last && *last ? ": " : "", last ? last : "");
}

int llama_dist_create(llama_dist **out, int rank, int world,
                      const char *id_path, double timeout_s, void *stream,
                      char *err, size_t errlen)
{
    if (!out) {
        set_msg(err, errlen, "llama_dist_create: out is NULL");
        return -1;
    }
    *out = NULL;
    if (world < 1 || rank < 0 || rank >= world) {
        set_msg(err, errlen, "llama_dist_create: rank %d of world %d (need "
                "world >= 1 and 0 <= rank < world)", rank, world);
        return -1;
    }
    if (world > 1 && (!id_path || !*id_path)) {
        set_msg(err, errlen, "llama_dist_create: %d ranks need an id file "
                "path", world);
        return -1;
    }
    if (!(timeout_s >= 0) || !isfinite(timeout_s)) {
        set_msg(err, errlen, "llama_dist_create: timeout %g s (need a finite "
                "value >= 0)", timeout_s);
        return -1;
    }
    int device = -1;
    cudaError_t ce = cudaGetDevice(&device);
    if (ce != cudaSuccess) {
        set_msg(err, errlen, "llama_dist_create: no current CUDA device: %s",
                cudaGetErrorString(ce));
        return -1;
    }

    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) {
            nccl_msg(err, errlen, "ncclGetUniqueId", r);
            return -1;
        }
        if (world > 1 &&
            llama_dist_id_write(id_path, world, &id, sizeof id, err, errlen))
            return -1;
    } else if (llama_dist_id_read(id_path, world, &id, sizeof id, timeout_s,
                                  err, errlen)) {
        return -1;
    }

    llama_dist *d = calloc(1, sizeof *d);
    if (!d) {
        set_msg(err, errlen, "llama_dist_create: out of host memory");
        return -1;
    }
    d->rank = rank;
    d->world = world;
    d->device = device;
    d->stream = stream;
    /* Collective: returns once every rank has joined, each having read the
     * id (NCCL's own timeouts apply to a rank that never comes). */
    ncclResult_t r = ncclCommInitRank(&d->comm, world, id, rank);
    if (r != ncclSuccess) {
        char what[96];
        snprintf(what, sizeof what, "ncclCommInitRank (rank %d of %d, device "
                 "%d)", rank, world, device);
        nccl_msg(err, errlen, what, r);
        free(d);
        if (rank == 0 && world > 1)
            (void)unlink(id_path); /* no later run may read this id */
        return -1;
    }
    /* Every rank has read the id by now: remove the file so that a later
     * run on the same path cannot pick up this run's id. */
    if (rank == 0 && world > 1)
        (void)unlink(id_path);
    *out = d;
    return 0;
}

void llama_dist_destroy(llama_dist *d)
{
    if (!d)
        return;
    if (d->comm) {
        if (d->broken) {
            ncclCommAbort(d->comm);
        } else {
            int prev = -1;
            int switched = cudaGetDevice(&prev) == cudaSuccess &&
                           prev != d->device &&
                           cudaSetDevice(d->device) == cudaSuccess;
            /* Finalize flushes the collectives still queued; a failure there
             * leaves only the abort. */
            if (ncclCommFinalize(d->comm) == ncclSuccess)
                ncclCommDestroy(d->comm);
            else
                ncclCommAbort(d->comm);
            if (switched)
                cudaSetDevice(prev);
        }
    }
    free(d);
}

static int nccl_type(owl_dtype t, ncclDataType_t *out)
{
    switch (t) {
    case OWL_DTYPE_F32: *out = ncclFloat32; return 0;
    case OWL_DTYPE_BF16: *out = ncclBfloat16; return 0;
    case OWL_DTYPE_F16: *out = ncclFloat16; return 0;
    case OWL_DTYPE_F64: *out = ncclFloat64; return 0;
    default: return -1;
    }
}

/* The collective's view of a tensor: its element count and NCCL type;
 * only dense tensors, which is what the model allocates. */
static int describe(llama_dist *d, const char *name, const char *what,
                    const owl_tensor *t, size_t *count, ncclDataType_t *type)
{
    if (t->rows < 0 || t->cols < 0 || t->row_stride != t->cols) {
        set_msg(d->err, sizeof d->err, "%s %s is %lldx%lld with row stride "
                "%lld: only dense tensors can be reduced", name, what,
                (long long)t->rows, (long long)t->cols,
                (long long)t->row_stride);
        return -1;
    }
    if (nccl_type(t->dtype, type) != 0) {
        set_msg(d->err, sizeof d->err, "%s %s has dtype %d, which NCCL cannot "
                "reduce here", name, what, (int)t->dtype);
        return -1;
    }
    *count = (size_t)t->rows * (size_t)t->cols;
    return 0;
}

/* Checks the pair before any collective is enqueued. */
static int check_pair(llama_dist *d, llama_gpu *m, const char *fn)
{
    if (d->broken) {
        /* keep the message of the failure that broke it */
        return -1;
    }
    if (!m) {
        set_msg(d->err, sizeof d->err, "%s: model is NULL", fn);
        return -1;
    }
    if (llama_gpu_stream(m) != d->stream) {
        set_msg(d->err, sizeof d->err, "%s: the model runs on stream %p, the "
                "communicator on %p; create the communicator with "
                "llama_gpu_stream(model) so the collectives follow the "
                "backward pass", fn, llama_gpu_stream(m), d->stream);
        return -1;
    }
    return 0;
}

/* One collective per tensor inside one group. which = 0: all-reduce the
 * gradients (average); 1: broadcast the weights from root. */
static int run_group(llama_dist *d, llama_gpu *m, int which, int root)
{
    const char *fn = which == 0 ? "llama_dist_allreduce_grads"
                                : "llama_dist_broadcast_weights";
    const int64_t n = llama_gpu_num_tensors(m);
    /* Validate every tensor first: nothing is enqueued on a bad one. */
    for (int64_t i = 0; i < n; i++) {
        llama_gpu_tensor t;
        if (llama_gpu_tensor_get(m, i, &t) != 0) {
            set_msg(d->err, sizeof d->err, "%s: tensor %lld: %s", fn,
                    (long long)i, llama_gpu_error(m));
            return -1;
        }
        const owl_tensor *x = which == 0 ? &t.grad : &t.weight;
        size_t count;
        ncclDataType_t type;
        if (x->data && describe(d, t.name, which == 0 ? "gradient" : "weight",
                                x, &count, &type) != 0)
            return -1;
    }

    int prev = -1;
    cudaError_t ce = cudaGetDevice(&prev);
    if (ce == cudaSuccess && prev != d->device)
        ce = cudaSetDevice(d->device);
    if (ce != cudaSuccess) {
        set_msg(d->err, sizeof d->err, "%s: cannot select device %d: %s", fn,
                d->device, cudaGetErrorString(ce));
        return -1;
    }
    cudaStream_t stream = (cudaStream_t)d->stream;
    ncclResult_t r = ncclGroupStart();
    ncclResult_t first = ncclSuccess;
    const char *first_name = "";
    if (r != ncclSuccess) {
        nccl_msg(d->err, sizeof d->err, "ncclGroupStart", r);
        d->broken = 1;
        goto out;
    }
    for (int64_t i = 0; i < n && first == ncclSuccess; i++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(m, i, &t); /* checked above */
        owl_tensor *x = which == 0 ? &t.grad : &t.weight;
        if (!x->data)
            continue; /* frozen: no gradient, nothing to reduce */
        size_t count = 0;
        ncclDataType_t type = ncclFloat32;
        if (describe(d, t.name, "", x, &count, &type) != 0) {
            first = ncclInvalidArgument; /* checked above: cannot happen */
            first_name = t.name;
            break;
        }
        if (count == 0)
            continue;
        r = which == 0 ? ncclAllReduce(x->data, x->data, count, type, ncclAvg,
                                       d->comm, stream)
                       : ncclBroadcast(x->data, x->data, count, type, root,
                                       d->comm, stream);
        if (r != ncclSuccess) {
            first = r;
            first_name = t.name;
        }
    }
    /* The group must be closed even after a failed call inside it. */
    r = ncclGroupEnd();
    if (first != ncclSuccess) {
        char what[160];
        snprintf(what, sizeof what, "%s: %s of %s", fn,
                 which == 0 ? "ncclAllReduce" : "ncclBroadcast", first_name);
        nccl_msg(d->err, sizeof d->err, what, first);
        d->broken = 1;
    } else if (r != ncclSuccess) {
        char what[96];
        snprintf(what, sizeof what, "%s: ncclGroupEnd", fn);
        nccl_msg(d->err, sizeof d->err, what, r);
        d->broken = 1;
    } else {
        /* An error of earlier work on another rank shows up here. */
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(d->comm, &async) == ncclSuccess &&
            async != ncclSuccess && async != ncclInProgress) {
            char what[96];
            snprintf(what, sizeof what, "%s: communicator failed", fn);
            nccl_msg(d->err, sizeof d->err, what, async);
            d->broken = 1;
        }
    }
out:
    if (prev >= 0 && prev != d->device)
        cudaSetDevice(prev);
    return d->broken ? -1 : 0;
}

int llama_dist_allreduce_grads(llama_dist *d, llama_gpu *m)
{
    if (!d)
        return -1;
    if (check_pair(d, m, "llama_dist_allreduce_grads") != 0)
        return -1;
    d->err[0] = '\0';
    return run_group(d, m, 0, 0);
}

/* What the wait watches between polls: the communicator of `d`, for the
 * call `fn`. */
typedef struct comm_watch {
    llama_dist *d;
    const char *fn;
} comm_watch;

/* 1 when the communicator failed (a peer is gone), with the message in
 * d->err. */
static int comm_failed(void *arg)
{
    const comm_watch *w = arg;
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(w->d->comm, &async) == ncclSuccess &&
        async != ncclSuccess && async != ncclInProgress) {
        char what[96];
        snprintf(what, sizeof what, "%s: communicator failed", w->fn);
        nccl_msg(w->d->err, sizeof w->d->err, what, async);
        return 1;
    }
    return 0;
}

/* Waits for the stream while watching the communicator, so a failed peer
 * is reported instead of waited on forever. The polls' expected "not
 * ready" is cleared from the thread's last error (stream_wait.h), so the
 * next kernel launch does not take it for its own failure. */
static int wait_stream(llama_dist *d, const char *fn)
{
    comm_watch w = {d, fn};
    int rc = llama_stream_wait(d->stream, comm_failed, &w, 200000L);
    if (rc == 0)
        return 0;
    if (rc > 0)
        set_msg(d->err, sizeof d->err, "%s: the stream failed: %s", fn,
                cudaGetErrorString((cudaError_t)rc));
    d->broken = 1;
    return -1;
}

int llama_dist_broadcast_weights(llama_dist *d, llama_gpu *m, int root)
{
    if (!d)
        return -1;
    const char *fn = "llama_dist_broadcast_weights";
    if (check_pair(d, m, fn) != 0)
        return -1;
    if (root < 0 || root >= d->world) {
        set_msg(d->err, sizeof d->err, "%s: root %d is not a rank of %d", fn,
                root, d->world);
        return -1;
    }
    d->err[0] = '\0';
    if (run_group(d, m, 1, root) != 0)
        return -1;
    /* Once, at the start of training: wait, so that a failure is reported
     * here and every rank starts from the same weights. */
    int prev = -1;
    if (cudaGetDevice(&prev) == cudaSuccess && prev != d->device)
        cudaSetDevice(d->device);
    int rc = wait_stream(d, fn);
    if (prev >= 0 && prev != d->device)
        cudaSetDevice(prev);
    return rc;
}

#endif /* LLAMA_HAVE_NCCL */
