/* Checkpoint directories replaced as a whole; see ckpt_dir.h for the
 * scheme. */
#define _GNU_SOURCE /* renameat2 (or its system call number), fdopendir */
#include "ckpt_dir.h"
#include "errmsg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1) /* linux/fs.h */
#endif

/* ---- which files a checkpoint consists of ------------------------------ */

const char *const ckpt_companion_files[] = {
    "tokenizer.json",          /* Hugging Face tokenizers */
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",         /* SentencePiece */
    "vocab.json",              /* byte-level BPE as two files */
    "merges.txt",
    "generation_config.json",
};
const size_t ckpt_companion_count =
    sizeof ckpt_companion_files / sizeof ckpt_companion_files[0];

static const char *const own_files[] = {
    "model.safetensors", "model.safetensors.index.json", "config.json",
    "optimizer.state", "trainer.txt",
};

/* model-NNNNN-of-NNNNN.safetensors, the shard names Hugging Face writes. */
static int is_shard_name(const char *s)
{
    if (strncmp(s, "model-", 6) != 0)
        return 0;
    s += 6;
    if (*s < '0' || *s > '9')
        return 0;
    while (*s >= '0' && *s <= '9')
        s++;
    if (strncmp(s, "-of-", 4) != 0)
        return 0;
    s += 4;
    if (*s < '0' || *s > '9')
        return 0;
    while (*s >= '0' && *s <= '9')
        s++;
    return strcmp(s, ".safetensors") == 0;
}

/* The name itself, without a temporary suffix. */
static int owns_exactly(const char *name)
{
    for (size_t i = 0; i < sizeof own_files / sizeof own_files[0]; i++)
        if (strcmp(name, own_files[i]) == 0)
            return 1;
    for (size_t i = 0; i < ckpt_companion_count; i++)
        if (strcmp(name, ckpt_companion_files[i]) == 0)
            return 1;
    return is_shard_name(name);
}

int ckpt_dir_owns(const char *name)
{
    if (owns_exactly(name))
        return 1;
    /* Leftovers of interrupted atomic writes: NAME.tmp-XXXXXX (ours),
     * NAME.XXXXXX (libowlore's state files), trainer.txt.tmp (the
     * trainer's, before whole-directory saves). */
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return 0;
    size_t base = (size_t)(dot - name), suffix = strlen(dot + 1);
    if (base >= NAME_MAX)
        return 0;
    char stem[NAME_MAX + 1];
    memcpy(stem, name, base);
    stem[base] = '\0';
    if (suffix == 10 && strncmp(dot + 1, "tmp-", 4) == 0)
        return owns_exactly(stem);
    if (suffix == 6)
        return strcmp(stem, "optimizer.state") == 0;
    return strcmp(dot + 1, "tmp") == 0 && strcmp(stem, "trainer.txt") == 0;
}

/* ---- paths ---------------------------------------------------------------- */

/* dir without trailing slashes, refused when it names no directory one
 * could replace ("", "/", ".", ".."). */
static char *clean_dir(const char *dir, char *err, size_t errlen)
{
    size_t n = dir ? strlen(dir) : 0;
    while (n > 1 && dir[n - 1] == '/')
        n--;
    const char *base = dir;
    for (size_t i = 0; i < n; i++)
        if (dir[i] == '/' && i + 1 < n)
            base = dir + i + 1;
    size_t bl = n - (size_t)(base - dir);
    if (n == 0 || (n == 1 && dir[0] == '/') ||
        (bl == 1 && base[0] == '.') ||
        (bl == 2 && base[0] == '.' && base[1] == '.')) {
        llama_set_err(err, errlen, "'%s': a checkpoint directory needs a name of "
                "its own (not '', '/', '.' or '..')", dir ? dir : "");
        return NULL;
    }
    char *p = strndup(dir, n);
    if (!p)
        llama_set_err(err, errlen, "%s: out of memory", dir);
    return p;
}

/* The parent of a cleaned directory path ("." when it has none). */
static char *parent_of(const char *dir)
{
    const char *slash = strrchr(dir, '/');
    if (!slash)
        return strdup(".");
    if (slash == dir)
        return strdup("/");
    return strndup(dir, (size_t)(slash - dir));
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 1);
    if (p) {
        memcpy(p, a, la);
        memcpy(p + la, b, lb + 1);
    }
    return p;
}

/* ---- checking a target ------------------------------------------------- */

int ckpt_dir_check(const char *dir, char *err, size_t errlen)
{
    char *d = clean_dir(dir, err, errlen);
    if (!d)
        return -1;
    int rc = -1;
    struct stat st;
    if (stat(d, &st) != 0) {
        if (errno != ENOENT) {
            llama_set_err(err, errlen, "%s: cannot stat: %s", d, strerror(errno));
            goto done;
        }
        char *parent = parent_of(d);
        int ok = parent && stat(parent, &st) == 0 && S_ISDIR(st.st_mode);
        if (!ok)
            llama_set_err(err, errlen, "%s: its parent %s is not a directory", d,
                    parent ? parent : "?");
        free(parent);
        rc = ok ? 0 : -1;
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        llama_set_err(err, errlen, "%s exists and is not a directory", d);
        goto done;
    }
    DIR *h = opendir(d);
    if (!h) {
        llama_set_err(err, errlen, "%s: cannot list: %s", d, strerror(errno));
        goto done;
    }
    rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(h)) != NULL) {
        const char *name = e->d_name;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        struct stat es;
        int is_dir = fstatat(dirfd(h), name, &es, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(es.st_mode);
        if (is_dir || !ckpt_dir_owns(name)) {
            llama_set_err(err, errlen, "%s holds %s '%s', which is not part of a "
                    "checkpoint: a save replaces the whole directory, so "
                    "save into another one (or move it away)", d,
                    is_dir ? "the directory" : "the file", name);
            rc = -1;
        }
    }
    closedir(h);
done:
    free(d);
    return rc;
}

/* ---- removing a directory tree --------------------------------------------- */

/* Removes every entry of the directory open as fd (closed on return),
 * descending into subdirectories without following symbolic links. */
static int remove_contents(int fd, int depth)
{
    DIR *h = fdopendir(fd);
    if (!h) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(h)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (unlinkat(dirfd(h), e->d_name, 0) == 0)
            continue;
        if ((errno != EISDIR && errno != EPERM) || depth >= 16) {
            rc = -1;
            continue;
        }
        int sub = openat(dirfd(h), e->d_name,
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || remove_contents(sub, depth + 1) != 0 ||
            unlinkat(dirfd(h), e->d_name, AT_REMOVEDIR) != 0)
            rc = -1;
    }
    closedir(h);
    return rc;
}

static int remove_tree(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    if (remove_contents(fd, 0) != 0)
        return -1;
    return rmdir(path);
}

/* ---- flushing -------------------------------------------------------------- */

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    /* Some file systems refuse fsync on a directory (EINVAL): nothing
     * more can be done there, and it is not an error of the save. */
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : -1;
    close(fd);
    return rc;
}

/* Every regular file of dir, then dir itself, to disk. */
static int fsync_tree(const char *dir, char *err, size_t errlen)
{
    DIR *h = opendir(dir);
    if (!h) {
        llama_set_err(err, errlen, "%s: cannot list: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(h)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(h), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        int fd = openat(dirfd(h), e->d_name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            llama_set_err(err, errlen, "%s/%s: cannot flush to disk: %s", dir,
                    e->d_name, strerror(errno));
            rc = -1;
        }
        if (fd >= 0)
            close(fd);
    }
    closedir(h);
    if (rc == 0 && fsync_path(dir, O_DIRECTORY) != 0) {
        llama_set_err(err, errlen, "%s: cannot flush to disk: %s", dir,
                strerror(errno));
        rc = -1;
    }
    return rc;
}

/* ---- staging and replacing -------------------------------------------------- */

int ckpt_stage_begin(ckpt_stage *s, const char *dir, char *err,
                     size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (ckpt_dir_check(dir, err, errlen) != 0)
        return -1;
    char *d = clean_dir(dir, err, errlen);
    if (!d)
        return -1;
    /* An existing target that is a symbolic link: the directory it points
     * to is replaced (an exchange would otherwise swap the link itself
     * away and leave the linked directory as it was). */
    struct stat st;
    if (lstat(d, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(d, NULL);
        if (!real) {
            llama_set_err(err, errlen, "%s: cannot resolve the link: %s", d,
                    strerror(errno));
            free(d);
            return -1;
        }
        free(d);
        d = real;
    }
    s->target = d;
    s->tmp = concat(d, ".saving-XXXXXX");
    if (!s->tmp) {
        llama_set_err(err, errlen, "%s: out of memory", d);
        ckpt_stage_abort(s);
        return -1;
    }
    if (!mkdtemp(s->tmp)) {
        llama_set_err(err, errlen, "%s: cannot create a directory beside it: %s",
                d, strerror(errno));
        free(s->tmp);
        s->tmp = NULL;
        ckpt_stage_abort(s);
        return -1;
    }
    /* mkdtemp makes it 0700; a model directory is readable like any. */
    chmod(s->tmp, 0755);
    return 0;
}

void ckpt_stage_abort(ckpt_stage *s)
{
    if (s->tmp)
        remove_tree(s->tmp);
    free(s->tmp);
    free(s->target);
    memset(s, 0, sizeof *s);
}

int ckpt_dir_exchange_disabled = 0;

static int exchange(const char *a, const char *b)
{
    if (ckpt_dir_exchange_disabled) {
        errno = EINVAL; /* what a file system without it answers */
        return -1;
    }
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b,
                        RENAME_EXCHANGE);
#else
    (void)a;
    (void)b;
    errno = ENOSYS;
    return -1;
#endif
}

/* Without an exchange: the old directory aside, then the new one in. */
static int replace_in_two_steps(ckpt_stage *s, char *err, size_t errlen)
{
    char *old = concat(s->target, ".old-XXXXXX");
    if (!old || !mkdtemp(old)) {
        llama_set_err(err, errlen, "%s: cannot create a directory beside it: %s",
                s->target, strerror(errno));
        free(old);
        return -1;
    }
    /* Onto the empty directory just made: rename replaces it. */
    if (rename(s->target, old) != 0) {
        llama_set_err(err, errlen, "%s: cannot move it aside to %s: %s",
                s->target, old, strerror(errno));
        rmdir(old);
        free(old);
        return -1;
    }
    if (rename(s->tmp, s->target) != 0) {
        llama_set_err(err, errlen, "%s: cannot move %s in place: %s (the previous "
                "checkpoint is in %s, the new one in %s)", s->target, s->tmp,
                strerror(errno), old, s->tmp);
        free(s->tmp);
        s->tmp = NULL; /* kept: it is the only copy of the new checkpoint */
        free(old);
        return -1;
    }
    remove_tree(old);
    free(old);
    return 0;
}

int ckpt_stage_commit(ckpt_stage *s, char *err, size_t errlen)
{
    if (!s->tmp || !s->target) {
        llama_set_err(err, errlen, "ckpt_stage_commit: no save in progress");
        return -1;
    }
    int rc = -1;
    char *parent = parent_of(s->target);
    if (!parent) {
        llama_set_err(err, errlen, "%s: out of memory", s->target);
        goto fail;
    }
    if (fsync_tree(s->tmp, err, errlen) != 0)
        goto fail;
    struct stat st;
    if (lstat(s->target, &st) != 0) {
        /* A first save: the staged directory takes the name. */
        if (rename(s->tmp, s->target) != 0) {
            llama_set_err(err, errlen, "%s: cannot rename %s to it: %s",
                    s->target, s->tmp, strerror(errno));
            goto fail;
        }
    } else if (exchange(s->tmp, s->target) == 0) {
        /* s->tmp now names the old checkpoint. Should it resist removal,
         * the save is still complete: only a leftover remains. */
        (void)remove_tree(s->tmp);
    } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        if (replace_in_two_steps(s, err, errlen) != 0)
            goto fail;
    } else {
        llama_set_err(err, errlen, "%s: cannot exchange it with %s: %s", s->target,
                s->tmp, strerror(errno));
        goto fail;
    }
    if (fsync_path(parent, O_DIRECTORY) != 0) {
        llama_set_err(err, errlen, "%s: the save is in place, but its directory "
                "entry could not be flushed to disk: %s", parent,
                strerror(errno));
        free(s->tmp);
        s->tmp = NULL;
        goto fail;
    }
    free(s->tmp);
    s->tmp = NULL;
    rc = 0;
fail:
    free(parent);
    ckpt_stage_abort(s);
    return rc;
}
