#ifndef PIREC_TEST_DIR_H
#define PIREC_TEST_DIR_H

/* A scratch directory for one test program: made fresh under $PIREC_BUILD_DIR (the build tree's
 * disk, so fsync and rename behave as they do for a recording) or /tmp when that is unset, and
 * removed with everything in it afterwards. */

#include <stddef.h>

/* Makes "<base>/<prefix>-XXXXXX" and writes its path to out (cap bytes).
 * Returns 0, or -1 with errno set. */
int test_dir_make(const char *prefix, char *out, size_t cap);

/* Removes dir and everything below it (links are removed, not followed). Returns 0 or -1. */
int test_dir_remove(const char *dir);

#endif
