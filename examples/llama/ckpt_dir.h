/* A checkpoint directory as one unit: what files belong to it, and its
 * replacement as a whole, so that a crash at any moment of a save leaves
 * either the old checkpoint or the new one under the directory's name,
 * never a mix of the two.
 *
 * The scheme. rename(2) replaces a file atomically, and a directory only
 * when the destination is an empty directory: a checkpoint directory
 * cannot be renamed over a non-empty one. So the new checkpoint is
 * written whole into a sibling directory (same parent, hence the same
 * file system, which rename needs), every file and the directory are
 * flushed to disk, and then the two names are exchanged atomically with
 * renameat2(RENAME_EXCHANGE) (Linux 3.15 and later: ext4, xfs, btrfs,
 * tmpfs, ...): the directory's name now holds the new checkpoint, the
 * sibling's the old one, which is then removed; the parent is flushed so
 * the exchange itself survives a crash. A first save (no directory yet)
 * is one rename of the sibling to the name.
 *
 * Where the file system cannot exchange, the old directory is first
 * renamed aside to DIR.old-XXXXXX (a rename onto a fresh empty directory,
 * atomic), then the sibling to DIR: a crash between these two renames
 * leaves no DIR, but the old checkpoint complete in DIR.old-XXXXXX and
 * the new one complete in DIR.saving-XXXXXX, never a mixture. A crash
 * during a save can also leave a DIR.saving-XXXXXX directory behind (a
 * partial new checkpoint, or after the exchange the old one): DIR itself
 * is intact, and the leftover can be deleted.
 *
 * Functions return 0, or -1 with a readable message in err. */
#ifndef LLAMA_CKPT_DIR_H
#define LLAMA_CKPT_DIR_H

#include <stddef.h>

/* The files a model directory carries besides its weights and
 * config.json, copied along by a save when the source has them: the
 * tokenizer (Hugging Face's and SentencePiece's files) and the
 * generation settings. */
extern const char *const ckpt_companion_files[];
extern const size_t ckpt_companion_count;

/* Whether name is one of the files a checkpoint directory consists of:
 * weights (model.safetensors, an index and its model-*-of-*.safetensors
 * shards), config.json, the companion files, optimizer.state,
 * trainer.txt, and the temporary files of an interrupted write of any of
 * them (NAME.tmp-XXXXXX). */
int ckpt_dir_owns(const char *name);

/* Whether dir can be replaced by a save: it does not exist (and its
 * parent is a directory), or it is a directory holding only files a
 * checkpoint consists of. Anything else there (a README, another format's
 * weights, a subdirectory) would be lost with the old checkpoint, so it
 * is refused, naming the first such entry. */
int ckpt_dir_check(const char *dir, char *err, size_t errlen);

/* A save in progress: the new checkpoint is written into `tmp`, a fresh
 * directory beside the target, then ckpt_stage_commit puts it in place. */
typedef struct ckpt_stage {
    char *target; /* the directory replaced (symbolic links resolved) */
    char *tmp;    /* TARGET.saving-XXXXXX, where the files are written */
} ckpt_stage;

/* Checks dir with ckpt_dir_check and creates the staging directory. */
int ckpt_stage_begin(ckpt_stage *s, const char *dir, char *err,
                     size_t errlen);
/* Flushes every file of s->tmp and the directory to disk, puts it in
 * place of the target atomically (see above) and removes the old
 * checkpoint. The stage is released either way. */
int ckpt_stage_commit(ckpt_stage *s, char *err, size_t errlen);
/* Removes the staging directory and releases the stage. */
void ckpt_stage_abort(ckpt_stage *s);

/* For tests: when nonzero, ckpt_stage_commit takes the two-rename path
 * of file systems that cannot exchange, so that it is exercised too. */
extern int ckpt_dir_exchange_disabled;

#endif /* LLAMA_CKPT_DIR_H */
