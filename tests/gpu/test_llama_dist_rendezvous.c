/*
 * The parts of the LLaMa example's data parallelism (examples/llama/cuda/
 * dist.c) that need neither NCCL nor a GPU, built from the same file
 * without NCCL:
 *  - rank, world and local rank from LLAMA_RANK / LLAMA_WORLD_SIZE, else
 *    torchrun's RANK / WORLD_SIZE, and LOCAL_RANK; malformed or half-set
 *    variables are errors naming the variable;
 *  - the id file: a round trip of the bytes, no temporary file left
 *    behind, a reader that starts before the writer (another process)
 *    waits for it, a missing file times out with a message, and a file of
 *    another world size, a foreign file and a truncated one are rejected at
 *    once instead of being waited on or used;
 *  - without NCCL, creating a communicator fails with a message.
 */
#include "testutil.h"

#include "dist.h"
#include "dist_rendezvous.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const env_names[] = {"LLAMA_RANK", "LLAMA_WORLD_SIZE",
                                        "RANK", "WORLD_SIZE", "LOCAL_RANK"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++)
        unsetenv(env_names[i]);
    return 0;
}

static void env_default(void **state)
{
    (void)state;
    int r = -1, w = -1, l = -1;
    char err[256] = "";
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), 0);
    assert_int_equal(r, 0);
    assert_int_equal(w, 1);
    assert_int_equal(l, 0);
    /* the dist.h entry point agrees */
    r = w = l = -1;
    assert_int_equal(llama_dist_from_env(&r, &w, &l), 0);
    assert_int_equal(r, 0);
    assert_int_equal(w, 1);
    assert_int_equal(l, 0);
}

static void env_llama_pair(void **state)
{
    (void)state;
    setenv("LLAMA_RANK", "3", 1);
    setenv("LLAMA_WORLD_SIZE", "8", 1);
    int r, w, l;
    char err[256] = "";
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), 0);
    assert_int_equal(r, 3);
    assert_int_equal(w, 8);
    assert_int_equal(l, 3); /* no LOCAL_RANK: the rank picks the device */
    setenv("LOCAL_RANK", "1", 1);
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), 0);
    assert_int_equal(l, 1);
    /* ours win over torchrun's */
    setenv("RANK", "5", 1);
    setenv("WORLD_SIZE", "16", 1);
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), 0);
    assert_int_equal(r, 3);
    assert_int_equal(w, 8);
}

static void env_torchrun_pair(void **state)
{
    (void)state;
    setenv("RANK", "5", 1);
    setenv("WORLD_SIZE", "16", 1);
    setenv("LOCAL_RANK", "5", 1);
    int r, w, l;
    char err[256] = "";
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), 0);
    assert_int_equal(r, 5);
    assert_int_equal(w, 16);
    assert_int_equal(l, 5);
}

static void expect_env_error(const char *needle)
{
    int r = 7, w = 7, l = 7;
    char err[256] = "";
    assert_int_equal(llama_dist_from_env_msg(&r, &w, &l, err, sizeof err), -1);
    if (!strstr(err, needle))
        fail_msg("message '%s' does not mention '%s'", err, needle);
    /* outputs untouched on failure */
    assert_int_equal(r, 7);
    assert_int_equal(w, 7);
    assert_int_equal(l, 7);
}

static void env_errors(void **state)
{
    (void)state;
    setenv("LLAMA_RANK", "0", 1);
    expect_env_error("LLAMA_WORLD_SIZE"); /* half a pair */
    clear_env(NULL);
    setenv("WORLD_SIZE", "2", 1);
    expect_env_error("RANK");
    setenv("RANK", "2", 1);
    expect_env_error("RANK=2"); /* rank >= world */
    setenv("RANK", "1x", 1);
    expect_env_error("not an integer");
    setenv("RANK", "", 1);
    expect_env_error("empty");
    setenv("RANK", "0", 1);
    setenv("WORLD_SIZE", "0", 1);
    expect_env_error("WORLD_SIZE=0");
    setenv("WORLD_SIZE", "99999999999999999999", 1);
    expect_env_error("WORLD_SIZE");
    setenv("WORLD_SIZE", "2", 1);
    setenv("LOCAL_RANK", "-1", 1);
    expect_env_error("LOCAL_RANK");
}

/* A fresh folder per test, removed with what is left in it. */
static char dir[256];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/llama_dist_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int count_entries(const char *path)
{
    DIR *dp = opendir(path);
    if (!dp)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}

static int remove_dir(void **state)
{
    (void)state;
    DIR *dp = opendir(dir);
    if (dp) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(dp)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(dp);
    }
    rmdir(dir);
    return 0;
}

static void fill_id(unsigned char *id, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        id[i] = (unsigned char)((i * 131u + seed * 17u + 7u) & 0xff);
}

static void id_round_trip(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/nccl.id", dir);
    unsigned char id[128], back[128];
    fill_id(id, sizeof id, 1);
    assert_int_equal(llama_dist_id_write(path, 4, id, sizeof id, err,
                                         sizeof err), 0);
    assert_int_equal(count_entries(dir), 1); /* the temporary file is gone */
    memset(back, 0, sizeof back);
    assert_int_equal(llama_dist_id_read(path, 4, back, sizeof back, 0.0, err,
                                        sizeof err), 0);
    assert_memory_equal(id, back, sizeof id);
    /* a second write replaces the first */
    fill_id(id, sizeof id, 2);
    assert_int_equal(llama_dist_id_write(path, 4, id, sizeof id, err,
                                         sizeof err), 0);
    assert_int_equal(llama_dist_id_read(path, 4, back, sizeof back, 0.0, err,
                                        sizeof err), 0);
    assert_memory_equal(id, back, sizeof id);
    assert_int_equal(count_entries(dir), 1);
}

static void id_reader_waits_for_writer(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/late.id", dir);
    unsigned char id[128], back[128];
    fill_id(id, sizeof id, 3);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* rank 0, late */
        struct timespec ts = {0, 300000000L};
        nanosleep(&ts, NULL);
        char e[256];
        int rc = llama_dist_id_write(path, 2, id, sizeof id, e, sizeof e);
        _exit(rc ? 1 : 0);
    }
    assert_int_equal(access(path, F_OK), -1); /* not there yet */
    int rc = llama_dist_id_read(path, 2, back, sizeof back, 30.0, err,
                                sizeof err);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (rc != 0)
        fail_msg("read failed: %s", err);
    assert_memory_equal(id, back, sizeof id);
}

static void id_timeout(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/never.id", dir);
    unsigned char back[128];
    assert_int_equal(llama_dist_id_read(path, 2, back, sizeof back, 0.1, err,
                                        sizeof err), -1);
    if (!strstr(err, "did not appear") || !strstr(err, path))
        fail_msg("message: %s", err);
}

static void write_raw(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void id_rejects_bad_files(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.id", dir);
    unsigned char id[128], back[128];
    fill_id(id, sizeof id, 4);

    /* written for 4 ranks, read by a group of 2: stale, fail at once
     * (a long timeout would hang the test if it waited) */
    assert_int_equal(llama_dist_id_write(path, 4, id, sizeof id, err,
                                         sizeof err), 0);
    assert_int_equal(llama_dist_id_read(path, 2, back, sizeof back, 60.0, err,
                                        sizeof err), -1);
    if (!strstr(err, "written for 4 ranks"))
        fail_msg("message: %s", err);

    /* an id of another size */
    assert_int_equal(llama_dist_id_read(path, 4, back, 64, 60.0, err,
                                        sizeof err), -1);
    if (!strstr(err, "expected 64"))
        fail_msg("message: %s", err);

    /* not an id file */
    char junk[200];
    memset(junk, 'x', sizeof junk);
    write_raw(path, junk, sizeof junk);
    assert_int_equal(llama_dist_id_read(path, 4, back, sizeof back, 60.0, err,
                                        sizeof err), -1);
    if (!strstr(err, "bad magic"))
        fail_msg("message: %s", err);

    /* a good file cut short (what a non-atomic writer could leave) */
    assert_int_equal(llama_dist_id_write(path, 4, id, sizeof id, err,
                                         sizeof err), 0);
    unsigned char whole[512];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t len = fread(whole, 1, sizeof whole, f);
    fclose(f);
    assert_true(len > sizeof id);
    write_raw(path, whole, len - 10);
    assert_int_equal(llama_dist_id_read(path, 4, back, sizeof back, 60.0, err,
                                        sizeof err), -1);
    if (!strstr(err, "expected 128"))
        fail_msg("message: %s", err);
    /* ... and one with bytes appended */
    memset(whole + len, 0, 4);
    write_raw(path, whole, len + 4);
    assert_int_equal(llama_dist_id_read(path, 4, back, sizeof back, 60.0, err,
                                        sizeof err), -1);

    /* bad arguments */
    assert_int_equal(llama_dist_id_write(NULL, 2, id, sizeof id, err,
                                         sizeof err), -1);
    assert_int_equal(llama_dist_id_write(path, 0, id, sizeof id, err,
                                         sizeof err), -1);
    assert_int_equal(llama_dist_id_read(path, 2, back, sizeof back, -1.0, err,
                                        sizeof err), -1);
}

static void id_unwritable_folder(void **state)
{
    (void)state;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/no/such/folder/nccl.id", dir);
    unsigned char id[128];
    fill_id(id, sizeof id, 5);
    assert_int_equal(llama_dist_id_write(path, 2, id, sizeof id, err,
                                         sizeof err), -1);
    if (!strstr(err, "cannot create"))
        fail_msg("message: %s", err);
}

static void create_without_nccl(void **state)
{
    (void)state;
    llama_dist *d = (llama_dist *)&d; /* not NULL, to see it cleared */
    char err[256] = "";
    assert_int_equal(llama_dist_create(&d, 0, 1, NULL, 1.0, NULL, err,
                                       sizeof err), -1);
    assert_null(d);
    if (!strstr(err, "NCCL"))
        fail_msg("message: %s", err);
    llama_dist_destroy(NULL);
    assert_int_equal(llama_dist_rank(NULL), -1);
    assert_int_equal(llama_dist_world(NULL), 0);
    assert_int_equal(llama_dist_allreduce_grads(NULL, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(env_default, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(env_llama_pair, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(env_torchrun_pair, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(env_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(id_round_trip, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(id_reader_waits_for_writer, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(id_timeout, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(id_rejects_bad_files, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(id_unwritable_folder, make_dir,
                                        remove_dir),
        cmocka_unit_test(create_without_nccl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
