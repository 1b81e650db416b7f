#define _XOPEN_SOURCE 700
#include "test-dir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

int test_dir_make(const char *prefix, char *out, size_t cap)
{
  const char *base = getenv("PIREC_BUILD_DIR");
  int n = snprintf(out, cap, "%s/%s-XXXXXX", base ? base : "/tmp", prefix);
  if (n < 0 || (size_t)n >= cap) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return mkdtemp(out) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int test_dir_remove(const char *dir)
{
  /* Depth first, so each directory is empty when its turn comes. */
  return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
