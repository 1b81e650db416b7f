#include "helpers/remux-gen.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int remux_gen_run(char *const argv[], char *out, size_t cap)
{
  posix_spawn_file_actions_t fa;
  int pipefd[2] = {-1, -1}, status, rc;
  size_t len = 0;
  pid_t pid;

  posix_spawn_file_actions_init(&fa);
  if (out != NULL) {
    if (pipe2(pipefd, O_CLOEXEC) < 0)
      return -errno;
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  }
  rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (pipefd[1] >= 0)
    close(pipefd[1]);
  if (rc != 0) {
    if (pipefd[0] >= 0)
      close(pipefd[0]);
    return -rc;
  }
  if (out != NULL) {
    char sink[4096];
    ssize_t n;
    for (;;) {
      if (len + 1 < cap)
        n = read(pipefd[0], out + len, cap - 1 - len);
      else
        n = read(pipefd[0], sink, sizeof sink); /* keep draining so the child never blocks */
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      if (len + 1 < cap)
        len += (size_t)n;
    }
    out[len] = '\0';
    close(pipefd[0]);
  }
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return -errno;
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

int remux_gen_video(const char *path, int frames, const char *size, int bframes)
{
  char src[128], nframes[32], bf[16];
  size_t n = strlen(path);
  int raw = n > 5 && strcmp(path + n - 5, ".h264") == 0;

  snprintf(src, sizeof src, "testsrc2=size=%s:rate=30", size);
  snprintf(nframes, sizeof nframes, "%d", frames);
  snprintf(bf, sizeof bf, "%d", bframes);
  char *argv[] = {"ffmpeg",
                  "-nostdin",
                  "-v",
                  "error",
                  "-y",
                  "-f",
                  "lavfi",
                  "-i",
                  src,
                  "-frames:v",
                  nframes,
                  "-c:v",
                  "libx264",
                  "-preset",
                  "ultrafast",
                  "-bf",
                  bf,
                  "-g",
                  "30",
                  "-pix_fmt",
                  "yuv420p",
                  "-f",
                  raw ? "h264" : "matroska",
                  (char *)path,
                  NULL};
  /* ultrafast disables B-frames; asking for them needs the medium preset's reference logic. */
  if (bframes > 0)
    argv[14] = "fast";
  return remux_gen_run(argv, NULL, 0);
}

static char *probe(char *const argv[], size_t cap)
{
  char *out = malloc(cap);
  if (out == NULL)
    return NULL;
  if (remux_gen_run(argv, out, cap) != 0) {
    free(out);
    return NULL;
  }
  return out;
}

int64_t remux_gen_packets(const char *path, int64_t **pos, int64_t **size)
{
  char *argv[] = {"ffprobe",         "-v",  "error",   "-select_streams", "v:0", "-show_entries",
                  "packet=pos,size", "-of", "csv=p=0", (char *)path,      NULL};
  char *out = probe(argv, 8 << 20), *line, *save = NULL;
  int64_t n = 0, cap = 1024;

  if (out == NULL)
    return -EIO;
  *pos = malloc((size_t)cap * sizeof(int64_t));
  *size = malloc((size_t)cap * sizeof(int64_t));
  for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    long long a, b;
    /* ffprobe prints the columns in its own order: size first, then pos. */
    if (sscanf(line, "%lld,%lld", &a, &b) != 2)
      continue;
    if (n == cap) {
      cap *= 2;
      *pos = realloc(*pos, (size_t)cap * sizeof(int64_t));
      *size = realloc(*size, (size_t)cap * sizeof(int64_t));
    }
    (*size)[n] = a;
    (*pos)[n] = b;
    n++;
  }
  free(out);
  return n;
}

int64_t *remux_gen_times(int64_t n, int64_t t0, int64_t jitter_ns, uint32_t seed)
{
  int64_t *t = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
  uint32_t x = seed ? seed : 1;

  for (int64_t i = 0; i < n; i++) {
    /* xorshift32: the same jitter every run, so a failure reproduces. */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t[i] = t0 + i * INT64_C(33333333) +
           (jitter_ns ? (int64_t)(x % (uint32_t)(2 * jitter_ns + 1)) - jitter_ns : 0);
  }
  return t;
}

int remux_gen_csv(const char *path, int64_t n, const int64_t *t, const int64_t *dev, const int64_t *bytes,
                  const int64_t *offset, size_t partial_tail)
{
  FILE *f = fopen(path, "w");
  char row[256];

  if (f == NULL)
    return -errno;
  fputs("trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset\n", f);
  for (int64_t i = 0; i <= n; i++) {
    int64_t k = i < n ? i : n - 1;
    char d[32] = "", b[32] = "", o[32] = "";
    int len;
    if (dev)
      snprintf(d, sizeof d, "%" PRId64, dev[k] + (i - k) * 33333333);
    if (bytes)
      snprintf(b, sizeof b, "%" PRId64, bytes[k]);
    if (offset)
      snprintf(o, sizeof o, "%" PRId64, offset[k]);
    len = snprintf(row, sizeof row, "1,%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%s,0,%s,%s\n",
                   t[k] + (i - k) * 33333333, t[k] + INT64_C(1700000000000000000), i, i + 7, d, b, o);
    if (i < n)
      fwrite(row, 1, (size_t)len, f);
    else if (partial_tail > 0)
      fwrite(row, 1, partial_tail < (size_t)len - 1 ? partial_tail : (size_t)len - 1, f);
  }
  return fclose(f) == 0 ? 0 : -errno;
}

int64_t remux_gen_probe_pts(const char *path, int frames, int64_t **pts, int *tb_den)
{
  char *argv[] = {"ffprobe",
                  "-v",
                  "error",
                  "-select_streams",
                  "v:0",
                  "-show_entries",
                  frames ? "frame=pts" : "packet=pts",
                  "-of",
                  "csv=p=0",
                  (char *)path,
                  NULL};
  char *out, *line, *save = NULL;
  int64_t n = 0, cap = 1024;

  if (tb_den != NULL) {
    char *targv[] = {"ffprobe",          "-v",  "error",   "-select_streams", "v:0", "-show_entries",
                     "stream=time_base", "-of", "csv=p=0", (char *)path,      NULL};
    char *tb = probe(targv, 256);
    int num = 0, den = 0;
    if (tb == NULL || sscanf(tb, "%d/%d", &num, &den) != 2)
      den = -1;
    free(tb);
    *tb_den = num == 1 ? den : -1;
  }
  out = probe(argv, 8 << 20);
  if (out == NULL)
    return -EIO;
  *pts = malloc((size_t)cap * sizeof(int64_t));
  for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    long long v;
    if (sscanf(line, "%lld", &v) != 1)
      continue;
    if (n == cap)
      *pts = realloc(*pts, (size_t)(cap *= 2) * sizeof(int64_t));
    (*pts)[n++] = v;
  }
  free(out);
  return n;
}

int remux_gen_truncate(const char *path, int64_t len)
{
  return truncate(path, len) == 0 ? 0 : -errno;
}

int remux_gen_tmpdir(char *out, size_t cap)
{
  const char *base = getenv("TMPDIR");
  snprintf(out, cap, "%s/pirec-remux-XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(out) ? 0 : -errno;
}

int remux_gen_app(const char *name, char *out, size_t cap)
{
  const char *build = getenv("PIREC_BUILD_DIR");
  if (!build || !*build)
    return -ENOENT;
  snprintf(out, cap, "%s/apps/%s", build, name);
  return access(out, X_OK) == 0 ? 0 : -ENOENT;
}

void remux_gen_rmrf(const char *dir)
{
  char *argv[] = {"rm", "-rf", "--", (char *)dir, NULL};
  remux_gen_run(argv, NULL, 0);
}
