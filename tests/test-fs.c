/* Tests for io/fs: every operation in its synchronous and asynchronous form on real files, the
 * error messages, and the crash guarantee of pirec_fs_write_atomic under SIGKILL. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pirec/clock.h"
#include "pirec/fs.h"

static char test_dir[4096];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Each test gets a fresh directory on a real disk (the build tree, not a tmpfs), so fsync and
 * rename behave as they do in a session directory. */
static int setup(void **state)
{
  const char *base = getenv("PIREC_BUILD_DIR");
  (void)state;
  snprintf(test_dir, sizeof test_dir, "%s/test-fs-XXXXXX", base ? base : "/tmp");
  if (!mkdtemp(test_dir)) {
    fprintf(stderr, "cannot create '%s': %s\n", test_dir, strerror(errno));
    return -1;
  }
  umask(022);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  return nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tpath(const char *fmt, ...)
{
  static char bufs[4][4096];
  static int next;
  char *out = bufs[next++ % 4];
  size_t n = strlen(test_dir);
  va_list ap;

  memcpy(out, test_dir, n);
  out[n] = '/';
  va_start(ap, fmt);
  vsnprintf(out + n + 1, 4096 - n - 1, fmt, ap);
  va_end(ap);
  return out;
}

static void put_file(const char *path, const void *data, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

/* Reads a file with plain system calls, independent of the code under test. Returns a malloc'd
 * buffer (NUL-terminated) and its size, or NULL if it cannot be opened. */
static char *slurp(const char *path, size_t *size)
{
  FILE *f = fopen(path, "rb");
  char *data = NULL;
  size_t cap = 0, len = 0, n;

  if (!f)
    return NULL;
  do {
    if (cap - len < 65536) {
      cap = cap ? cap * 2 : 1 << 20;
      data = realloc(data, cap + 1);
      assert_non_null(data);
    }
    n = fread(data + len, 1, cap - len, f);
    len += n;
  } while (n > 0);
  fclose(f);
  data[len] = '\0';
  *size = len;
  return data;
}

/* Counts (and with remove set, deletes) leftover temporary files of the atomic writer in test_dir. */
static int count_temp_files(int remove_them)
{
  DIR *d = opendir(test_dir);
  struct dirent *e;
  int count = 0;

  assert_non_null(d);
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (e->d_name[0] == '.' && n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0) {
      count++;
      if (remove_them)
        assert_int_equal(unlinkat(dirfd(d), e->d_name, 0), 0);
    }
  }
  closedir(d);
  return count;
}

/* --- async plumbing: one loop per test, the callback records that it ran --------------------- */

struct done {
  int calls;
  int result;
};

static void done_cb(struct pirec_fs_req *req)
{
  struct done *d = req->data;
  d->calls++;
  d->result = req->result;
}

static void never_cb(struct pirec_fs_req *req)
{
  (void)req;
  fail_msg("callback ran although the call returned an error");
}

/* Runs the loop until the request's callback has run; returns its result. */
static int run_until_done(uv_loop_t *loop, struct pirec_fs_req *req, struct done *d)
{
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(d->calls, 1);
  assert_int_equal(d->result, req->result);
  return req->result;
}

/* --- the SIGKILL test ------------------------------------------------------------------------- */

enum { KILL_BASE_SIZE = 3 << 20 };

/* Generation g's content: its size and every byte depend on g, and the first 8 bytes hold g, so a
 * file made of parts of two generations (or a truncated one) never passes check_generation. */
static size_t gen_size(uint64_t g)
{
  return KILL_BASE_SIZE + (size_t)(g % 7) * 65536 + (size_t)(g % 4096) * 8;
}

static void gen_fill(uint64_t g, unsigned char *buf)
{
  size_t n = gen_size(g);
  memcpy(buf, &g, sizeof g);
  for (size_t i = sizeof g; i < n; i++)
    buf[i] = (unsigned char)(i * 131u + g * 7u + (i >> 13));
}

/* Returns the generation held by data, or -1 with a description if it is not one complete
 * generation. */
static int64_t check_generation(const unsigned char *data, size_t len, unsigned char *scratch, char *why,
                                size_t why_len)
{
  uint64_t g;

  if (len < sizeof g) {
    snprintf(why, why_len, "file is %zu bytes, shorter than a header", len);
    return -1;
  }
  memcpy(&g, data, sizeof g);
  if (g > 1000000) {
    snprintf(why, why_len, "header holds implausible generation %llu", (unsigned long long)g);
    return -1;
  }
  if (len != gen_size(g)) {
    snprintf(why, why_len, "generation %llu should be %zu bytes, file is %zu", (unsigned long long)g,
             gen_size(g), len);
    return -1;
  }
  gen_fill(g, scratch);
  for (size_t i = 0; i < len; i++) {
    if (data[i] != scratch[i]) {
      snprintf(why, why_len, "generation %llu differs at byte %zu (0x%02x, expected 0x%02x)",
               (unsigned long long)g, i, data[i], scratch[i]);
      return -1;
    }
  }
  return (int64_t)g;
}

struct child_writer {
  uv_loop_t loop;
  struct pirec_fs_req req;
  const char *path;
  uint64_t gen;
  unsigned char *buf;
};

static void child_async_next(struct child_writer *w);

static void child_async_cb(struct pirec_fs_req *req)
{
  struct child_writer *w = req->data;
  if (req->result < 0) {
    fprintf(stderr, "child: %s\n", req->message);
    _exit(1);
  }
  pirec_fs_req_cleanup(req);
  w->gen++;
  child_async_next(w);
}

static void child_async_next(struct child_writer *w)
{
  gen_fill(w->gen, w->buf);
  w->req.data = w;
  if (pirec_fs_write_atomic(&w->loop, &w->req, w->path, w->buf, gen_size(w->gen), 0644, child_async_cb) < 0)
    _exit(1);
}

/* Rewrites path with generation after generation until killed, through the synchronous or the
 * asynchronous front end. A byte on ready_fd tells the parent the first write is about to start,
 * so its kill delay is measured from there and not from fork (which is slow under TSan). */
static void child_writer_main(const char *path, uint64_t first_gen, int async, int ready_fd)
{
  struct child_writer w = {.path = path, .gen = first_gen};

  w.buf = malloc(gen_size(0) + 7 * 65536 + 4096 * 8);
  if (!w.buf)
    _exit(1);
  if (async && uv_loop_init(&w.loop) < 0)
    _exit(1);
  if (write(ready_fd, "r", 1) != 1)
    _exit(1);
  if (async) {
    child_async_next(&w);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    _exit(1); /* the loop only ends on an error */
  }
  for (;; w.gen++) {
    struct pirec_fs_req req;
    gen_fill(w.gen, w.buf);
    if (pirec_fs_write_atomic(NULL, &req, path, w.buf, gen_size(w.gen), 0644, NULL) < 0) {
      fprintf(stderr, "child: %s\n", req.message);
      _exit(1);
    }
    pirec_fs_req_cleanup(&req);
  }
}

static void test_write_atomic_survives_sigkill(void **state)
{
  /* At least ITERATIONS kills, and more (up to MAX_ITERATIONS) until both outcomes were seen. */
  enum { ITERATIONS = 40, MAX_ITERATIONS = 160 };
  const char *path = tpath("data.bin");
  unsigned char *buf = malloc(gen_size(0) + 7 * 65536 + 4096 * 8);
  unsigned char *scratch = malloc(gen_size(0) + 7 * 65536 + 4096 * 8);
  struct pirec_fs_req req;
  int64_t start, fill_ns, write_ns, current = 0;
  int replaced = 0, interrupted = 0, done = 0;
  unsigned seed = (unsigned)pirec_clock_mono_ns();
  const char *seed_env = getenv("PIREC_TEST_SEED");

  (void)state;
  assert_non_null(buf);
  assert_non_null(scratch);
  if (seed_env)
    seed = (unsigned)strtoul(seed_env, NULL, 10);
  srand(seed);

  /* Generation 0 is the old content; one timed write tells how long a rewrite takes here, so the
   * kills can be spread over the whole of one. */
  /* The child fills each generation before writing it, and under TSan filling costs more than
   * writing: time both. */
  start = pirec_clock_mono_ns();
  gen_fill(0, buf);
  fill_ns = pirec_clock_mono_ns() - start;
  assert_int_equal(pirec_fs_write_atomic(NULL, &req, path, buf, gen_size(0), 0644, NULL), 0);
  write_ns = pirec_clock_mono_ns() - start;
  pirec_fs_req_cleanup(&req);

  for (int i = 0; i < MAX_ITERATIONS && (i < ITERATIONS || !replaced || !interrupted); i++) {
    size_t len;
    unsigned char *data;
    char why[256];
    int64_t got, delay_ns;
    struct timespec ts;
    int status, ready[2];
    char byte;
    pid_t pid;

    assert_int_equal(pipe(ready), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(ready[0]);
      child_writer_main(path, (uint64_t)current + 1, i % 2, ready[1]);
    }
    close(ready[1]);
    assert_int_equal(read(ready[0], &byte, 1), 1);
    close(ready[0]);

    /* Every other kill anywhere from before the first write starts to a few writes in; the rest
     * aimed inside the first write, after its generation was filled. */
    if (i % 4 < 2)
      delay_ns = (int64_t)((double)rand() / RAND_MAX * (double)(3 * write_ns + 2000000));
    else
      delay_ns = fill_ns + (int64_t)((double)rand() / RAND_MAX * (double)(write_ns - fill_ns));
    ts.tv_sec = delay_ns / 1000000000;
    ts.tv_nsec = delay_ns % 1000000000;
    nanosleep(&ts, NULL);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
      fail_msg("writer child ended on its own (status 0x%x) in iteration %d", status, i);

    data = (unsigned char *)slurp(path, &len);
    if (!data)
      fail_msg("iteration %d (seed %u): '%s' is missing after the kill", i, seed, path);
    got = check_generation(data, len, scratch, why, sizeof why);
    if (got < 0)
      fail_msg("iteration %d (seed %u, kill after %lld us): '%s' is torn: %s", i, seed,
               (long long)(delay_ns / 1000), path, why);
    if (got < current)
      fail_msg("iteration %d: generation went back from %lld to %lld", i, (long long)current, (long long)got);
    if (got > current)
      replaced++;
    current = got;
    free(data);
    if (count_temp_files(1) > 0)
      interrupted++; /* the kill landed inside a write: its temporary file was left behind */
    done++;
  }
  print_message("sigkill: %d kills (seed %u, one write %lld us): %d left a new generation, "
                "%d interrupted a write, final generation %lld\n",
                done, seed, (long long)(write_ns / 1000), replaced, interrupted, (long long)current);
  /* Without both outcomes the test would not have exercised anything. */
  assert_true(replaced > 0);
  assert_true(interrupted > 0);
  free(buf);
  free(scratch);
}

/* --- read_file -------------------------------------------------------------------------------- */

static void test_read_file_sync_and_async(void **state)
{
  const char text[] = "first line\nsecond line, with \xc3\xa9 and a NUL-free tail\n";
  const char *path = tpath("read.txt");
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;

  (void)state;
  put_file(path, text, sizeof text - 1);

  assert_int_equal(pirec_fs_read_file(NULL, &req, path, 1 << 20, NULL), 0);
  assert_int_equal(req.result, 0);
  assert_null(req.message);
  assert_int_equal(req.size, sizeof text - 1);
  assert_memory_equal(req.contents, text, sizeof text); /* includes the terminating NUL */
  pirec_fs_req_cleanup(&req);
  assert_null(req.contents);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_read_file(&loop, &req, path, 1 << 20, done_cb), 0);
  assert_int_equal(d.calls, 0); /* async: nothing has run yet */
  assert_int_equal(run_until_done(&loop, &req, &d), 0);
  assert_int_equal(req.size, sizeof text - 1);
  assert_memory_equal(req.contents, text, sizeof text);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);

  /* An empty file is a valid, empty, NUL-terminated result. */
  put_file(tpath("empty"), "", 0);
  assert_int_equal(pirec_fs_read_file(NULL, &req, tpath("empty"), 10, NULL), 0);
  assert_int_equal(req.size, 0);
  assert_non_null(req.contents);
  assert_int_equal(req.contents[0], '\0');
  pirec_fs_req_cleanup(&req);
}

static void test_read_file_limit(void **state)
{
  char data[1000];
  const char *path = tpath("limit.bin");
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;

  (void)state;
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (char)('a' + i % 26);
  put_file(path, data, sizeof data);

  /* Exactly at the limit is fine, one byte over is -EFBIG, with the path in the message. */
  assert_int_equal(pirec_fs_read_file(NULL, &req, path, sizeof data, NULL), 0);
  assert_int_equal(req.size, sizeof data);
  assert_memory_equal(req.contents, data, sizeof data);
  pirec_fs_req_cleanup(&req);

  assert_int_equal(pirec_fs_read_file(NULL, &req, path, sizeof data - 1, NULL), -EFBIG);
  assert_int_equal(req.result, -EFBIG);
  assert_null(req.contents);
  assert_non_null(req.message);
  assert_non_null(strstr(req.message, path));
  assert_non_null(strstr(req.message, "cannot read"));
  pirec_fs_req_cleanup(&req);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_read_file(&loop, &req, path, 10, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), -EFBIG);
  assert_non_null(strstr(req.message, path));
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);

  /* /proc files report size 0, so the limit must hold on the bytes actually read. */
  assert_int_equal(pirec_fs_read_file(NULL, &req, "/proc/self/status", 16, NULL), -EFBIG);
  assert_non_null(strstr(req.message, "'/proc/self/status'"));
  pirec_fs_req_cleanup(&req);
  assert_int_equal(pirec_fs_read_file(NULL, &req, "/proc/self/status", 1 << 20, NULL), 0);
  assert_true(req.size > 16);
  assert_non_null(strstr(req.contents, "Pid:"));
  pirec_fs_req_cleanup(&req);
}

static void test_read_file_errors(void **state)
{
  const char *missing = tpath("no/such/file");
  char expected[4200];
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;

  (void)state;
  assert_int_equal(pirec_fs_read_file(NULL, &req, missing, 100, NULL), -ENOENT);
  snprintf(expected, sizeof expected, "cannot open '%s': No such file or directory", missing);
  assert_string_equal(req.message, expected);
  pirec_fs_req_cleanup(&req);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_read_file(&loop, &req, missing, 100, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), -ENOENT);
  assert_string_equal(req.message, expected);
  pirec_fs_req_cleanup(&req);

  assert_int_equal(pirec_fs_read_file(NULL, &req, test_dir, 100, NULL), -EISDIR);
  assert_non_null(strstr(req.message, test_dir));
  pirec_fs_req_cleanup(&req);

  /* A call that fails up front never runs its callback. */
  assert_int_equal(pirec_fs_read_file(NULL, &req, missing, 100, never_cb), -EINVAL);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(pirec_fs_read_file(&loop, &req, "", 100, never_cb), -EINVAL);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* --- write_atomic ----------------------------------------------------------------------------- */

static void test_write_atomic_sync_and_async(void **state)
{
  const char *path = tpath("session.json");
  const char old_text[] = "{\"old\": true}\n";
  const char new_text[] = "{\"new\": true, \"longer\": \"than before\"}\n";
  char *data;
  size_t len;
  struct stat st;
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;

  (void)state;
  assert_int_equal(pirec_fs_write_atomic(NULL, &req, path, old_text, strlen(old_text), 0600, NULL), 0);
  pirec_fs_req_cleanup(&req);
  data = slurp(path, &len);
  assert_non_null(data);
  assert_int_equal(len, strlen(old_text));
  assert_memory_equal(data, old_text, len);
  free(data);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);

  /* Async: the caller's buffer may change right after the call; the write uses the copy. */
  char scratch[sizeof new_text];
  memcpy(scratch, new_text, sizeof new_text);
  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_write_atomic(&loop, &req, path, scratch, strlen(scratch), 0644, done_cb), 0);
  memset(scratch, 'X', sizeof scratch);
  assert_int_equal(run_until_done(&loop, &req, &d), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);
  data = slurp(path, &len);
  assert_int_equal(len, strlen(new_text));
  assert_memory_equal(data, new_text, len);
  free(data);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
  assert_int_equal(count_temp_files(0), 0);

  /* Relative paths work too (the directory is "."). */
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(test_dir), 0);
  assert_int_equal(pirec_fs_write_atomic(NULL, &req, "relative.txt", "r\n", 2, 0, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(chdir(cwd), 0);
  data = slurp(tpath("relative.txt"), &len);
  assert_int_equal(len, 2);
  free(data);
  assert_int_equal(count_temp_files(0), 0);
}

static void test_write_atomic_errors(void **state)
{
  const char *missing = tpath("missing-dir/file.json");
  const char *path = tpath("keep.txt");
  const char old_text[] = "old content stays\n";
  char big[64 * 1024];
  struct pirec_fs_req req;
  struct rlimit saved, small;
  struct sigaction ign = {.sa_handler = SIG_IGN}, saved_sa;
  struct done d = {0};
  uv_loop_t loop;
  char *data;
  size_t len;

  (void)state;
  assert_int_equal(pirec_fs_write_atomic(NULL, &req, missing, "x", 1, 0644, NULL), -ENOENT);
  assert_non_null(strstr(req.message, missing));
  assert_non_null(strstr(req.message, "No such file or directory"));
  pirec_fs_req_cleanup(&req);

  /* A write that fails half-way (the file size limit, so EFBIG comes from the kernel for real)
   * removes its temporary file and leaves the old file as it was. */
  put_file(path, old_text, strlen(old_text));
  memset(big, 'n', sizeof big);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
  small = saved;
  small.rlim_cur = 4096;
  assert_int_equal(sigaction(SIGXFSZ, &ign, &saved_sa), 0);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);

  int rc = pirec_fs_write_atomic(NULL, &req, path, big, sizeof big, 0644, NULL);
  char *sync_message = req.message ? strdup(req.message) : NULL;
  pirec_fs_req_cleanup(&req);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_write_atomic(&loop, &req, path, big, sizeof big, 0644, done_cb), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  int async_rc = req.result;
  char *async_message = req.message ? strdup(req.message) : NULL;
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
  assert_int_equal(sigaction(SIGXFSZ, &saved_sa, NULL), 0);

  assert_int_equal(rc, -EFBIG);
  assert_int_equal(async_rc, -EFBIG);
  assert_int_equal(d.calls, 1);
  assert_non_null(sync_message);
  assert_non_null(strstr(sync_message, path));
  assert_non_null(strstr(sync_message, "File too large"));
  assert_non_null(async_message);
  assert_non_null(strstr(async_message, path));
  free(sync_message);
  free(async_message);
  assert_int_equal(count_temp_files(0), 0);
  data = slurp(path, &len);
  assert_int_equal(len, strlen(old_text));
  assert_memory_equal(data, old_text, len);
  free(data);

  /* The target is a directory: rename fails, the temporary file goes away. */
  assert_int_equal(mkdir(tpath("adir"), 0755), 0);
  assert_int_equal(pirec_fs_write_atomic(NULL, &req, tpath("adir"), "x", 1, 0644, NULL), -EISDIR);
  assert_non_null(strstr(req.message, "cannot rename"));
  assert_non_null(strstr(req.message, tpath("adir")));
  pirec_fs_req_cleanup(&req);
  assert_int_equal(count_temp_files(0), 0);
}

/* Eight atomic writes of the same path in flight at once in the threadpool: each uses its own
 * temporary file, all succeed, the file ends up holding exactly one of them, nothing is left over,
 * and every callback runs on the loop thread. */
struct concurrent {
  struct pirec_fs_req req;
  char text[64];
  pthread_t loop_thread;
  int calls;
  int on_loop_thread;
};

static void concurrent_cb(struct pirec_fs_req *req)
{
  struct concurrent *c = req->data;
  c->calls++;
  c->on_loop_thread = pthread_equal(pthread_self(), c->loop_thread);
}

static void test_write_atomic_concurrent(void **state)
{
  enum { N = 8 };
  const char *path = tpath("shared.txt");
  struct concurrent c[N];
  uv_loop_t loop;
  char *data;
  size_t len;
  int matches = 0;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  for (int i = 0; i < N; i++) {
    memset(&c[i], 0, sizeof c[i]);
    snprintf(c[i].text, sizeof c[i].text, "writer %d wrote this whole line\n", i);
    c[i].loop_thread = pthread_self();
    c[i].req.data = &c[i];
    assert_int_equal(
        pirec_fs_write_atomic(&loop, &c[i].req, path, c[i].text, strlen(c[i].text), 0644, concurrent_cb), 0);
  }
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  data = slurp(path, &len);
  assert_non_null(data);
  for (int i = 0; i < N; i++) {
    assert_int_equal(c[i].calls, 1);
    assert_int_equal(c[i].req.result, 0);
    assert_true(c[i].on_loop_thread);
    pirec_fs_req_cleanup(&c[i].req);
    if (len == strlen(c[i].text) && memcmp(data, c[i].text, len) == 0)
      matches++;
  }
  free(data);
  assert_int_equal(matches, 1);
  assert_int_equal(count_temp_files(0), 0);
}

/* --- append ----------------------------------------------------------------------------------- */

static void test_append(void **state)
{
  const char *path = tpath("events.csv");
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;
  struct stat st;
  char *data;
  size_t len;

  (void)state;
  /* Creates the file, then adds to it; sync and async writes land in call order. */
  assert_int_equal(pirec_fs_append(NULL, &req, path, "one\n", 4, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_append(&loop, &req, path, "two\n", 4, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(pirec_fs_append(NULL, &req, path, "three\n", 6, NULL), 0);
  pirec_fs_req_cleanup(&req);
  /* Zero bytes is a valid append that still creates nothing new and changes nothing. */
  assert_int_equal(pirec_fs_append(NULL, &req, path, NULL, 0, NULL), 0);
  pirec_fs_req_cleanup(&req);

  data = slurp(path, &len);
  assert_int_equal(len, 14);
  assert_memory_equal(data, "one\ntwo\nthree\n", 14);
  free(data);

  const char *bad = tpath("nowhere/events.csv");
  d.calls = 0;
  req.data = &d;
  assert_int_equal(pirec_fs_append(&loop, &req, bad, "x", 1, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), -ENOENT);
  assert_non_null(strstr(req.message, bad));
  assert_non_null(strstr(req.message, "No such file or directory"));
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* --- unlink ----------------------------------------------------------------------------------- */

static void test_unlink(void **state)
{
  const char *a = tpath("a.tmpfile"), *b = tpath("b.tmpfile");
  char expected[4200];
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;

  (void)state;
  put_file(a, "a", 1);
  put_file(b, "b", 1);
  assert_int_equal(pirec_fs_unlink(NULL, &req, a, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(access(a, F_OK), -1);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_unlink(&loop, &req, b, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(access(b, F_OK), -1);

  d.calls = 0;
  assert_int_equal(pirec_fs_unlink(&loop, &req, b, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), -ENOENT);
  snprintf(expected, sizeof expected, "cannot remove '%s': No such file or directory", b);
  assert_string_equal(req.message, expected);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(pirec_fs_unlink(NULL, &req, a, NULL), -ENOENT);
  snprintf(expected, sizeof expected, "cannot remove '%s': No such file or directory", a);
  assert_string_equal(req.message, expected);
  pirec_fs_req_cleanup(&req);
}

/* --- mkdir -p --------------------------------------------------------------------------------- */

static int is_dir(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_mkdir_p(void **state)
{
  struct pirec_fs_req req;
  struct done d = {0};
  uv_loop_t loop;
  struct stat st;

  (void)state;
  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("s/t/u/v"), 0750, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_true(is_dir(tpath("s/t/u/v")));
  assert_int_equal(stat(tpath("s/t"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0750);

  /* Existing directories, trailing and doubled slashes are all fine. */
  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("s/t/u/v"), 0755, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("s//t/w///"), 0755, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_true(is_dir(tpath("s/t/w")));
  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, "/", 0755, NULL), 0);
  pirec_fs_req_cleanup(&req);

  assert_int_equal(uv_loop_init(&loop), 0);
  req.data = &d;
  assert_int_equal(pirec_fs_mkdir_p(&loop, &req, tpath("async/x/y"), 0, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), 0);
  pirec_fs_req_cleanup(&req);
  assert_true(is_dir(tpath("async/x/y")));

  /* A file in the way: inside the path it is -ENOTDIR, as the last component -EEXIST; the message
   * names the requested path and the component that is in the way. */
  put_file(tpath("s/file"), "f", 1);
  d.calls = 0;
  assert_int_equal(pirec_fs_mkdir_p(&loop, &req, tpath("s/file/deeper/still"), 0755, done_cb), 0);
  assert_int_equal(run_until_done(&loop, &req, &d), -ENOTDIR);
  assert_non_null(strstr(req.message, tpath("s/file/deeper/still")));
  assert_non_null(strstr(req.message, tpath("s/file")));
  pirec_fs_req_cleanup(&req);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("s/file"), 0755, NULL), -EEXIST);
  assert_non_null(strstr(req.message, tpath("s/file")));
  assert_non_null(strstr(req.message, "not a directory"));
  pirec_fs_req_cleanup(&req);

  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("s/file/x"), 0755, NULL), -ENOTDIR);
  pirec_fs_req_cleanup(&req);

  /* A symlink to a directory counts as a directory, as with mkdir -p. */
  assert_int_equal(symlink(tpath("s/t"), tpath("link")), 0);
  assert_int_equal(pirec_fs_mkdir_p(NULL, &req, tpath("link/new"), 0755, NULL), 0);
  pirec_fs_req_cleanup(&req);
  assert_true(is_dir(tpath("s/t/new")));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      /* First, before any test starts libuv's threadpool, so the forks copy a single thread. */
      cmocka_unit_test_setup_teardown(test_write_atomic_survives_sigkill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_file_sync_and_async, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_file_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_file_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_sync_and_async, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_atomic_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_append, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unlink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
