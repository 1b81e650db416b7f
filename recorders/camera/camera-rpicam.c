/* Raspberry Pi CSI cameras through an rpicam-vid child: frames from its stdout (split by size or
 * by JPEG markers), each frame's libcamera SensorTimestamp (CLOCK_BOOTTIME ns) from its per-frame
 * --metadata output read through a pipe. The --save-pts file is not used: rpicam-vid rebases it
 * to the first frame in whole microseconds, which cannot be matched against the host clocks. */

#include "camera-int.h"

#include "pirec/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libavutil/error.h>

/* ---- splitter ---- */

int pirec_camera_splitter_init(struct pirec_camera_splitter *sp, enum pirec_camera_split_mode mode,
                               size_t frame_bytes, size_t max_frame)
{
  memset(sp, 0, sizeof *sp);
  if ((mode == PIREC_CAMERA_SPLIT_SIZE && frame_bytes == 0) ||
      (mode == PIREC_CAMERA_SPLIT_JPEG && max_frame < 4))
    return -EINVAL;
  sp->mode = mode;
  sp->frame_bytes = frame_bytes;
  sp->cap = 2 * (mode == PIREC_CAMERA_SPLIT_SIZE ? frame_bytes : max_frame);
  sp->buf = malloc(sp->cap);
  return sp->buf ? 0 : -ENOMEM;
}

void pirec_camera_splitter_free(struct pirec_camera_splitter *sp)
{
  free(sp->buf);
  sp->buf = NULL;
}

uint8_t *pirec_camera_splitter_space(struct pirec_camera_splitter *sp, size_t *avail)
{
  /* Consumed bytes are reclaimed lazily: move the unconsumed tail to the front when the free space
   * at the end drops below half the buffer (one frame at most is moved). */
  if (sp->start > 0 && sp->cap - sp->end < sp->cap / 2) {
    size_t n = sp->end - sp->start;
    memmove(sp->buf, sp->buf + sp->start, n);
    sp->scan = sp->scan >= sp->start ? sp->scan - sp->start : 0;
    sp->start = 0;
    sp->end = n;
  }
  *avail = sp->cap - sp->end;
  return sp->buf + sp->end;
}

void pirec_camera_splitter_fill(struct pirec_camera_splitter *sp, size_t n)
{
  sp->end += n;
}

uint64_t pirec_camera_splitter_skipped(const struct pirec_camera_splitter *sp)
{
  return sp->skipped;
}

/* JPEG: SOI (FFD8), then marker segments each with a 2-byte length (APPn may hold thumbnails with
 * their own EOI, so their contents are skipped, not scanned), then after SOS entropy-coded data in
 * which FF is followed by 00 (stuffing) or D0..D7 (restart markers) until EOI (FFD9). Anything else
 * makes the scanner resynchronise on the next SOI. */
static int jpeg_next(struct pirec_camera_splitter *sp, const uint8_t **frame, size_t *len)
{
  uint8_t *b = sp->buf;

  for (;;) {
    size_t i = sp->scan;
    if (sp->scan_state == 0) {
      /* find SOI */
      while (i + 1 < sp->end && !(b[i] == 0xFF && b[i + 1] == 0xD8))
        i++;
      sp->skipped += i - sp->start;
      sp->start = i;
      if (i + 1 >= sp->end) {
        sp->scan = i;
        return 0;
      }
      sp->scan = i + 2;
      sp->scan_state = 1;
      continue;
    }
    if (sp->scan - sp->start > sp->cap / 2) {
      /* longer than max_frame: skip past this SOI */
      sp->skipped += 2;
      sp->start += 2;
      sp->scan = sp->start;
      sp->scan_state = 0;
      continue;
    }
    if (sp->scan_state == 1) {
      if (i + 4 > sp->end)
        return 0;
      if (b[i] != 0xFF) {
        goto resync;
      }
      uint8_t m = b[i + 1];
      if (m == 0xFF) { /* fill byte */
        sp->scan = i + 1;
        continue;
      }
      if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
        sp->scan = i + 2;
        continue;
      }
      if (m == 0xD9) { /* EOI right after headers: a (degenerate) complete image */
        sp->scan = i + 2;
        goto complete;
      }
      size_t seg = ((size_t)b[i + 2] << 8) | b[i + 3];
      if (seg < 2)
        goto resync;
      sp->scan = i + 2 + seg;
      if (m == 0xDA)
        sp->scan_state = 2;
      continue;
    }
    /* entropy-coded data */
    while (i + 1 < sp->end) {
      if (b[i] == 0xFF) {
        uint8_t m = b[i + 1];
        if (m == 0x00 || m == 0xFF || (m >= 0xD0 && m <= 0xD7)) {
          i += m == 0xFF ? 1 : 2;
          continue;
        }
        if (m == 0xD9) {
          sp->scan = i + 2;
          goto complete;
        }
        /* another segment (progressive JPEG: DHT/SOS between scans) */
        sp->scan = i;
        sp->scan_state = 1;
        break;
      }
      i++;
    }
    if (sp->scan_state == 2) {
      sp->scan = i;
      return 0;
    }
    continue;
  resync:
    sp->skipped += 2;
    sp->start += 2;
    sp->scan = sp->start;
    sp->scan_state = 0;
    continue;
  complete:
    *frame = b + sp->start;
    *len = sp->scan - sp->start;
    sp->start = sp->scan;
    sp->scan_state = 0;
    return 1;
  }
}

int pirec_camera_splitter_next(struct pirec_camera_splitter *sp, const uint8_t **frame, size_t *len)
{
  if (sp->mode == PIREC_CAMERA_SPLIT_JPEG) {
    if (sp->scan < sp->start)
      sp->scan = sp->start;
    return jpeg_next(sp, frame, len);
  }
  if (sp->end - sp->start < sp->frame_bytes)
    return 0;
  *frame = sp->buf + sp->start;
  *len = sp->frame_bytes;
  sp->start += sp->frame_bytes;
  return 1;
}

/* ---- metadata lines ---- */

int pirec_camera_rpicam_metadata_line(const char *line, size_t len, int64_t *ns)
{
  static const char key[] = "SensorTimestamp=";
  const size_t klen = sizeof key - 1;

  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
    len--;
  if (len == 0)
    return PIREC_RPICAM_META_END;
  if (len < klen || memcmp(line, key, klen) != 0)
    return PIREC_RPICAM_META_OTHER;
  int64_t v = 0;
  size_t i = klen;
  if (i == len)
    return -EINVAL;
  for (; i < len; i++) {
    if (line[i] < '0' || line[i] > '9' || v > (INT64_MAX - (line[i] - '0')) / 10)
      return -EINVAL;
    v = v * 10 + (line[i] - '0');
  }
  *ns = v;
  return PIREC_RPICAM_META_SENSOR_TS;
}

/* ---- the rpicam-vid child ---- */

#define TS_QUEUE 64

struct pirec__rpicam {
  pid_t pid;
  int out_fd;  /* the child's stdout */
  int meta_fd; /* read end of the --metadata pipe, -1 once it hung up */
  int wake_fd; /* eventfd for interrupt */
  struct pirec_camera_splitter sp;
  /* A frame's metadata block arrives after the frame; a block still owed for a frame pushed
   * without one is discarded when it arrives, so frames and blocks stay paired by position. */
  int64_t ts[TS_QUEUE];
  unsigned ts_head, ts_count;
  uint64_t ts_owed;
  int64_t block_ts; /* SensorTimestamp of the block being read, INT64_MIN until its line */
  char line[128];
  size_t line_len;
  int64_t frame_interval_ns;
  int eof;
};

/* Splits "a b  c" on spaces into argv[*argc...] (writes into buf). */
static void split_args(char *buf, const char **argv, int *argc, int max)
{
  char *save = NULL;
  for (char *tok = strtok_r(buf, " \t", &save); tok && *argc < max - 1; tok = strtok_r(NULL, " \t", &save))
    argv[(*argc)++] = tok;
}

static char *find_in_path(const char *prog)
{
  if (strchr(prog, '/'))
    return access(prog, X_OK) == 0 ? strdup(prog) : NULL;
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t n = colon ? (size_t)(colon - path) : strlen(path);
    char *cand = pirec__camera_strdupf("%.*s/%s", (int)n, path, prog);
    if (cand && access(cand, X_OK) == 0)
      return cand;
    free(cand);
    path += n + (colon ? 1 : 0);
  }
  return NULL;
}

static void drain_metadata(struct pirec__rpicam *rp)
{
  char buf[4096];
  for (;;) {
    ssize_t n = read(rp->meta_fd, buf, sizeof buf);
    if (n == 0) {
      close(rp->meta_fd);
      rp->meta_fd = -1;
      return;
    }
    if (n < 0)
      return; /* EAGAIN */
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] != '\n') {
        if (rp->line_len < sizeof rp->line - 1)
          rp->line[rp->line_len++] = buf[i];
        continue;
      }
      int64_t ns;
      int kind = pirec_camera_rpicam_metadata_line(rp->line, rp->line_len, &ns);
      rp->line_len = 0;
      if (kind == PIREC_RPICAM_META_SENSOR_TS) {
        rp->block_ts = ns;
      } else if (kind == PIREC_RPICAM_META_END) {
        /* one block per frame, with or without a timestamp: the pairing counts blocks */
        if (rp->ts_owed > 0) {
          rp->ts_owed--;
        } else if (rp->ts_count < TS_QUEUE) {
          rp->ts[(rp->ts_head + rp->ts_count) % TS_QUEUE] = rp->block_ts;
          rp->ts_count++;
        }
        rp->block_ts = INT64_MIN;
      }
    }
  }
}

int pirec__rpicam_open(const struct pirec_camera_settings *s, struct pirec__rpicam **out,
                       struct pirec_camera_format *fmt, char **message)
{
  struct pirec__rpicam *rp;
  int w = s->width > 0 ? s->width : 1280, h = s->height > 0 ? s->height : 720;
  int fps_num = s->fps_num > 0 ? s->fps_num : 30, fps_den = s->fps_num > 0 && s->fps_den > 0 ? s->fps_den : 1;
  int mjpeg = strcmp(s->input_format, "mjpeg") == 0;
  int stride = s->rpicam_stride > 0 ? s->rpicam_stride : w;
  int r, pipefd[2] = {-1, -1};

  if (s->input_format[0] && !mjpeg && strcmp(s->input_format, "yuv420") != 0) {
    *message = pirec__camera_strdupf("rpicam input format '%s' is not supported: use yuv420 or mjpeg",
                                     s->input_format);
    return -EINVAL;
  }
  rp = calloc(1, sizeof *rp);
  if (!rp)
    return -ENOMEM;
  rp->pid = -1;
  rp->out_fd = rp->meta_fd = rp->wake_fd = -1;
  rp->block_ts = INT64_MIN;
  rp->frame_interval_ns = (int64_t)1000000000 * fps_den / fps_num;
  *out = rp;

  memset(fmt, 0, sizeof *fmt);
  fmt->codec = mjpeg ? PIREC_CAMERA_CODEC_MJPEG : PIREC_CAMERA_CODEC_RAW;
  fmt->width = w;
  fmt->height = h;
  fmt->fps_num = fps_num;
  fmt->fps_den = fps_den;
  fmt->has_device_ts = 1;
  fmt->device_clock_continuous = 1; /* SensorTimestamp is CLOCK_BOOTTIME, whichever child took it */
  if (!mjpeg) {
    /* rpicam-vid's yuv420 rows may be padded to the stride; the encoder gets the padded width. */
    snprintf(fmt->pix_fmt, sizeof fmt->pix_fmt, "yuv420p");
    fmt->width = stride;
    fmt->frame_bytes = (size_t)stride * (size_t)h * 3 / 2;
  }
  r = pirec_camera_splitter_init(&rp->sp, mjpeg ? PIREC_CAMERA_SPLIT_JPEG : PIREC_CAMERA_SPLIT_SIZE,
                                 fmt->frame_bytes, (size_t)w * (size_t)h * 2 + 65536);
  if (r < 0)
    return r;

  char *prog = find_in_path(s->rpicam_program);
  if (!prog) {
    *message =
        pirec__camera_strdupf("cannot run '%s': not found in PATH or not executable", s->rpicam_program);
    return -ENOENT;
  }
  /* The metadata "file" is a pipe the child reaches as /proc/self/fd/3: no path on disk, nothing
   * left behind by a crash, and end-of-file when the child exits. */
  int metafd[2] = {-1, -1};
  if (pipe2(metafd, O_CLOEXEC) < 0 || (rp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
      pipe2(pipefd, O_CLOEXEC) < 0) {
    r = -errno;
    *message = pirec__camera_strdupf("cannot set up the pipes for '%s': %s", prog, strerror(-r));
    if (metafd[0] >= 0) {
      close(metafd[0]);
      close(metafd[1]);
    }
    free(prog);
    return r;
  }
  rp->meta_fd = metafd[0];
  fcntl(rp->meta_fd, F_SETFL, O_NONBLOCK);
  rp->out_fd = pipefd[0];
  fcntl(rp->out_fd, F_SETPIPE_SZ, 1 << 20);

  char num[6][32], extra[sizeof s->rpicam_args];
  const char *argv[64];
  int argc = 0;
  snprintf(num[0], sizeof num[0], "%.31s", s->source);
  snprintf(num[1], sizeof num[1], "%d", w);
  snprintf(num[2], sizeof num[2], "%d", h);
  snprintf(num[3], sizeof num[3], "%.6g", (double)fps_num / fps_den);
  argv[argc++] = prog;
  argv[argc++] = "--camera";
  argv[argc++] = num[0];
  argv[argc++] = "-t";
  argv[argc++] = "0";
  argv[argc++] = "-n";
  argv[argc++] = "--codec";
  argv[argc++] = mjpeg ? "mjpeg" : "yuv420";
  argv[argc++] = "--width";
  argv[argc++] = num[1];
  argv[argc++] = "--height";
  argv[argc++] = num[2];
  argv[argc++] = "--framerate";
  argv[argc++] = num[3];
  argv[argc++] = "--flush";
  argv[argc++] = "--metadata";
  argv[argc++] = "/proc/self/fd/3";
  argv[argc++] = "--metadata-format";
  argv[argc++] = "txt";
  argv[argc++] = "-o";
  argv[argc++] = "-";
  snprintf(extra, sizeof extra, "%s", s->rpicam_args);
  split_args(extra, argv, &argc, 64);
  argv[argc] = NULL;

  /* fork+exec rather than posix_spawn: the child must set PR_SET_PDEATHSIG so it dies with us, and
   * its own process group so a terminal's Ctrl-C reaches only the recorder, which stops it. Only
   * async-signal-safe calls between fork and exec. */
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    r = -errno;
    close(pipefd[1]);
    close(metafd[1]);
    *message = pirec__camera_strdupf("cannot start '%s': %s", prog, strerror(-r));
    free(prog);
    return r;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    dup2(pipefd[1], 1);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      dup2(devnull, 0);
    if (metafd[1] == 3)
      fcntl(3, F_SETFD, 0); /* dup2 onto itself would keep close-on-exec */
    else
      dup2(metafd[1], 3);
    execv(prog, (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  close(metafd[1]);
  free(prog);
  rp->pid = pid;
  return 0;
}

/* Waits for the metadata block of the frame just split: it normally follows within microseconds. */
static int64_t take_ts(struct pirec__rpicam *rp, atomic_int *interrupted)
{
  int64_t deadline = pirec_clock_mono_ns() + 2 * rp->frame_interval_ns;
  while (rp->ts_count == 0 && rp->meta_fd >= 0 && !atomic_load(interrupted)) {
    int64_t left = deadline - pirec_clock_mono_ns();
    if (left <= 0)
      break;
    struct pollfd p[2] = {{.fd = rp->meta_fd, .events = POLLIN}, {.fd = rp->wake_fd, .events = POLLIN}};
    int n = poll(p, 2, (int)(left / 1000000) + 1);
    if (n > 0 && p[0].revents)
      drain_metadata(rp);
  }
  if (rp->ts_count == 0) {
    rp->ts_owed++;
    return INT64_MIN;
  }
  int64_t ns = rp->ts[rp->ts_head];
  rp->ts_head = (rp->ts_head + 1) % TS_QUEUE;
  rp->ts_count--;
  return ns;
}

int pirec__rpicam_read(struct pirec__rpicam *rp, struct pirec_camera_frame *frame, atomic_int *interrupted)
{
  const uint8_t *data;
  size_t len;

  for (;;) {
    if (atomic_load(interrupted))
      return -EINTR;
    if (pirec_camera_splitter_next(&rp->sp, &data, &len)) {
      frame->arrival_mono_ns = pirec_clock_mono_ns();
      frame->arrival_wall_ns = pirec_clock_wall_ns();
      frame->data = data;
      frame->len = len;
      if (rp->meta_fd >= 0)
        drain_metadata(rp);
      frame->device_ts_ns = take_ts(rp, interrupted);
      return 0;
    }
    if (rp->eof)
      return AVERROR_EOF;
    struct pollfd p[3] = {{.fd = rp->out_fd, .events = POLLIN},
                          {.fd = rp->wake_fd, .events = POLLIN},
                          {.fd = rp->meta_fd, .events = POLLIN}};
    int n = poll(p, rp->meta_fd >= 0 ? 3 : 2, -1);
    if (n < 0 && errno != EINTR)
      return -errno;
    if (n <= 0)
      continue;
    if (rp->meta_fd >= 0 && p[2].revents)
      drain_metadata(rp);
    if (p[0].revents) {
      size_t avail;
      uint8_t *space = pirec_camera_splitter_space(&rp->sp, &avail);
      ssize_t got = read(rp->out_fd, space, avail);
      if (got < 0 && errno != EINTR && errno != EAGAIN)
        return -errno;
      if (got == 0)
        rp->eof = 1;
      if (got > 0)
        pirec_camera_splitter_fill(&rp->sp, (size_t)got);
    }
  }
}

void pirec__rpicam_interrupt(struct pirec__rpicam *rp)
{
  uint64_t one = 1;
  if (rp->wake_fd >= 0 && write(rp->wake_fd, &one, sizeof one) < 0) {
    /* the counter cannot overflow from single increments; nothing to do */
  }
}

void pirec__rpicam_free(struct pirec__rpicam *rp)
{
  if (!rp)
    return;
  if (rp->pid > 0) {
    /* Ask politely, then insist: rpicam-vid tears down libcamera on SIGTERM/SIGINT. */
    kill(-rp->pid, SIGTERM);
    kill(rp->pid, SIGTERM);
    int status;
    for (int i = 0; i < 100; i++) {
      if (waitpid(rp->pid, &status, WNOHANG) != 0) {
        rp->pid = -1;
        break;
      }
      usleep(10000);
    }
    if (rp->pid > 0) {
      kill(-rp->pid, SIGKILL);
      kill(rp->pid, SIGKILL);
      waitpid(rp->pid, &status, 0);
    }
  }
  if (rp->out_fd >= 0)
    close(rp->out_fd);
  if (rp->meta_fd >= 0)
    close(rp->meta_fd);
  if (rp->wake_fd >= 0)
    close(rp->wake_fd);
  pirec_camera_splitter_free(&rp->sp);
  free(rp);
}
