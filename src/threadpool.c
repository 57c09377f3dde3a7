/* A small fixed pool of worker threads owned by one context. Each call to
 * owl__parallel_for hands out contiguous ranges and waits for them all, so
 * the calling thread sees every result when it returns. Plain pthreads keep
 * the pool visible to ThreadSanitizer and free of process-global state. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

struct owl_pool {
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    int32_t num_workers;
    pthread_t *threads;
    /* current job, protected by lock */
    uint64_t generation;
    owl_range_fn fn;
    void *arg;
    int64_t n;
    int64_t chunk;
    int64_t next_chunk;
    int64_t num_chunks;
    int32_t pending; /* workers still busy with this generation */
    bool shutdown;
};

/* Takes chunks until none are left. Called with lock held; returns with it
 * held. */
static void drain_chunks(owl_pool *p)
{
    while (p->next_chunk < p->num_chunks) {
        int64_t c = p->next_chunk++;
        int64_t begin = c * p->chunk;
        int64_t end = begin + p->chunk < p->n ? begin + p->chunk : p->n;
        owl_range_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->lock);
        fn(arg, begin, end);
        pthread_mutex_lock(&p->lock);
    }
}

static void *worker_main(void *vp)
{
    owl_pool *p = vp;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->shutdown && p->generation == seen)
            pthread_cond_wait(&p->work_ready, &p->lock);
        if (p->shutdown)
            break;
        seen = p->generation;
        drain_chunks(p);
        if (--p->pending == 0)
            pthread_cond_signal(&p->work_done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

owl_pool *owl__pool_create(int32_t num_threads)
{
    owl_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->num_workers = num_threads - 1;
    p->threads = calloc((size_t)p->num_workers, sizeof *p->threads);
    if (p->threads == NULL) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_ready, NULL);
    pthread_cond_init(&p->work_done, NULL);
    for (int32_t i = 0; i < p->num_workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->num_workers = i; /* run with the ones we got */
            break;
        }
    }
    return p;
}

void owl__pool_free(owl_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    for (int32_t i = 0; i < p->num_workers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_done);
    pthread_cond_destroy(&p->work_ready);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

void owl__parallel_for(owl_context *ctx, int64_t n, int64_t grain,
                       owl_range_fn fn, void *arg)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    owl_pool *p = ctx ? ctx->pool : NULL;
    int64_t threads = p ? (int64_t)p->num_workers + 1 : 1;
    if (threads == 1 || n <= grain) {
        fn(arg, 0, n);
        return;
    }
    /* A few chunks per thread balances uneven cores without much overhead. */
    int64_t chunk = (n + threads * 4 - 1) / (threads * 4);
    if (chunk < grain)
        chunk = grain;
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = chunk;
    p->next_chunk = 0;
    p->num_chunks = (n + chunk - 1) / chunk;
    p->pending = p->num_workers;
    p->generation++;
    pthread_cond_broadcast(&p->work_ready);
    drain_chunks(p);
    while (p->pending > 0)
        pthread_cond_wait(&p->work_done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
