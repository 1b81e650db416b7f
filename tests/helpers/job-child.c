/* A real child process for tests/test-job.c: each mode is one way a child can behave or misbehave.
 *
 *   job-child exit N                exit with code N
 *   job-child signal N              kill itself with signal N
 *   job-child hang                  print "ready" on stderr, then sleep until a signal
 *   job-child hang-ignore-term      the same, but SIGTERM is ignored (needs SIGKILL)
 *   job-child silent                sleep without any output
 *   job-child flood-stderr MIB      write MIB MiB of numbered lines to stderr, then "done", exit 0
 *   job-child lines N               print N numbered lines on stdout, the last without a newline
 *   job-child read-slow KIB_PER_S   read stdin at about that rate until EOF; print the byte count
 *   job-child read-all              read stdin as fast as possible until EOF; print the byte count
 *   job-child never-read            print "ready" on stderr, never read stdin, sleep until killed
 *   job-child progress FD N MS      write N ffmpeg-style progress blocks to FD every MS ms,
 *                                   then one with progress=end; exit 0
 *   job-child progress-stall FD N   write N progress blocks quickly, then sleep without more
 *   job-child print-pid-hang        print its pid on stdout, then hang (for the orphan test)
 *   job-child pipe-size             print the capacity of the pipe on its stdin (F_GETPIPE_SZ)
 *   job-child binary N              write N bytes of binary_byte(i) (NULs and '\n' among them) on
 *                                   stdout in writes of 1 to 9000 bytes, then "3 lines" on fd 3
 *                                   when fd 3 is open; exit 0
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static void write_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      exit(3);
    }
    p += w;
    n -= (size_t)w;
  }
}

static void hang(void)
{
  for (;;)
    pause();
}

static long read_stdin(long kib_per_s)
{
  char buf[65536];
  long total = 0;
  size_t chunk = kib_per_s > 0 ? 4096 : sizeof buf;
  for (;;) {
    ssize_t r = read(0, buf, chunk);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    total += r;
    if (kib_per_s > 0)
      sleep_ms(4 * 1000 / kib_per_s); /* 4 KiB per step */
  }
  return total;
}

static void progress_block(int fd, long frame, int end)
{
  char b[512];
  int n = snprintf(b, sizeof b,
                   "frame=%ld\nfps=30.00\nstream_0_0_q=28.0\nbitrate=100.0kbits/s\n"
                   "total_size=%ld\nout_time_us=%ld\nout_time_ms=%ld\nout_time=00:00:%02ld.%06ld\n"
                   "dup_frames=0\ndrop_frames=0\nspeed=1.5x\nprogress=%s\n",
                   frame, frame * 1000, frame * 33333, frame * 33333, (frame * 33333) / 1000000,
                   (frame * 33333) % 1000000, end ? "end" : "continue");
  write_all(fd, b, (size_t)n);
}

/* The byte at offset i of "binary": every value 0..255 occurs, NUL and '\n' included. */
static unsigned char binary_byte(long i)
{
  return (unsigned char)((i * 7) ^ (i >> 8));
}

static void binary(long n)
{
  static unsigned char buf[9000];
  long done = 0, step = 1;
  while (done < n) {
    long k = step < n - done ? step : n - done;
    for (long j = 0; j < k; j++)
      buf[j] = binary_byte(done + j);
    write_all(1, (const char *)buf, (size_t)k);
    done += k;
    step = step * 3 % 9000 + 1;
  }
  if (fcntl(3, F_GETFD) >= 0)
    write_all(3, "meta 1\nmeta 2\nmeta 3\n", 21);
}

int main(int argc, char **argv)
{
  const char *mode = argc > 1 ? argv[1] : "";
  long a = argc > 2 ? atol(argv[2]) : 0;
  long b = argc > 3 ? atol(argv[3]) : 0;
  long c = argc > 4 ? atol(argv[4]) : 0;

  if (!strcmp(mode, "exit"))
    return (int)a;
  if (!strcmp(mode, "signal")) {
    signal((int)a, SIG_DFL);
    raise((int)a);
    return 99;
  }
  if (!strcmp(mode, "hang") || !strcmp(mode, "hang-ignore-term")) {
    if (!strcmp(mode, "hang-ignore-term"))
      signal(SIGTERM, SIG_IGN);
    write_all(2, "ready\n", 6);
    hang();
  }
  if (!strcmp(mode, "silent"))
    hang();
  if (!strcmp(mode, "flood-stderr")) {
    char line[128];
    long total = a * 1024 * 1024, done = 0, i = 0;
    while (done < total) {
      int n = snprintf(line, sizeof line, "flood line %08ld: the quick brown fox jumps\n", i++);
      write_all(2, line, (size_t)n);
      done += n;
    }
    write_all(2, "done\n", 5);
    return 0;
  }
  if (!strcmp(mode, "lines")) {
    char line[64];
    for (long i = 0; i < a; i++) {
      int n = snprintf(line, sizeof line, i + 1 < a ? "line %ld\n" : "line %ld", i);
      write_all(1, line, (size_t)n);
    }
    return 0;
  }
  if (!strcmp(mode, "read-slow") || !strcmp(mode, "read-all")) {
    long total = read_stdin(!strcmp(mode, "read-slow") ? a : 0);
    printf("%ld\n", total);
    return 0;
  }
  if (!strcmp(mode, "read-check")) {
    /* reads stdin at a KiB/s, 4 KiB at a time, and counts the bytes that are not binary_byte(offset) */
    static char buf[4096];
    long total = 0, bad = 0;
    for (;;) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      for (ssize_t i = 0; i < r; i++)
        bad += (unsigned char)buf[i] != binary_byte(total + i);
      total += r;
      sleep_ms(4 * 1000 / a);
    }
    printf("%ld %ld\n", total, bad);
    return 0;
  }
  if (!strcmp(mode, "never-read")) {
    write_all(2, "ready\n", 6);
    hang();
  }
  if (!strcmp(mode, "progress")) {
    for (long i = 1; i <= b; i++) {
      progress_block((int)a, i * 10, 0);
      sleep_ms(c);
    }
    progress_block((int)a, (b + 1) * 10, 1);
    return 0;
  }
  if (!strcmp(mode, "progress-stall")) {
    for (long i = 1; i <= b; i++)
      progress_block((int)a, i, 0);
    hang();
  }
  if (!strcmp(mode, "print-pid-hang")) {
    printf("%ld\n", (long)getpid());
    fflush(stdout);
    hang();
  }
  if (!strcmp(mode, "finish-on-eof") && argc > 2) {
    /* An encoder's shape: reads stdin to its end, then "closes its file" and exits 0. */
    char buf[4096];
    printf("%ld\n", (long)getpid());
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0)
      ;
    FILE *f = fopen(argv[2], "w");
    if (f) {
      fputs("finished\n", f);
      fclose(f);
    }
    return 0;
  }
  if (!strcmp(mode, "pipe-size")) {
    printf("%d\n", fcntl(0, F_GETPIPE_SZ));
    return 0;
  }
  if (!strcmp(mode, "binary")) {
    binary(a);
    return 0;
  }
  fprintf(stderr, "job-child: unknown mode '%s'\n", mode);
  return 2;
}
