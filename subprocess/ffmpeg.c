#include "pirec/ffmpeg.h"

#include "pirec/job.h"
#include "pirec/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- argv building ---- */

struct argv_b {
  char **v;
  size_t n, cap;
  int err;
};

static void add(struct argv_b *b, const char *s)
{
  if (b->err)
    return;
  if (b->n + 2 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 32;
    char **v = realloc(b->v, cap * sizeof *v);
    if (!v) {
      b->err = -ENOMEM;
      return;
    }
    b->v = v;
    b->cap = cap;
  }
  b->v[b->n] = strdup(s);
  if (!b->v[b->n]) {
    b->err = -ENOMEM;
    return;
  }
  b->v[++b->n] = NULL;
}

static void addf(struct argv_b *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct argv_b *b, const char *fmt, ...)
{
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  add(b, buf);
}

static int finish(struct argv_b *b, char ***out)
{
  if (b->err) {
    pirec_ffmpeg_argv_free(b->v);
    return b->err;
  }
  *out = b->v;
  return 0;
}

void pirec_ffmpeg_argv_free(char **argv)
{
  if (!argv)
    return;
  for (char **p = argv; *p; p++)
    free(*p);
  free(argv);
}

void pirec_ffmpeg_encode_init(struct pirec_ffmpeg_encode *e)
{
  memset(e, 0, sizeof *e);
  e->pix_fmt = "yuv420p";
  e->rate_num = 30;
  e->rate_den = 1;
  e->encoder = "libx264";
  e->format = "matroska";
  e->preset = "ultrafast";
  e->crf = 23;
  e->gop = 60;
  e->bframes = 0;
  e->out_pix_fmt = "yuv420p";
  e->loglevel = "error";
}

void pirec_ffmpeg_remux_init(struct pirec_ffmpeg_remux *r)
{
  memset(r, 0, sizeof *r);
  r->loglevel = "error";
}

static int bad(const char *what, const char *field)
{
  pirec_log(PIREC_LOG_ERROR, "%s: invalid or missing '%s'", what, field);
  return -EINVAL;
}

/* The first field of e that is missing or out of range, or NULL when e can be built. */
static const char *encode_invalid(const struct pirec_ffmpeg_encode *e)
{
  if (!e->output || !e->output[0])
    return "output";
  if (e->width <= 0 || e->height <= 0)
    return e->width <= 0 ? "width" : "height";
  if (!e->pix_fmt || !e->pix_fmt[0])
    return "pix_fmt";
  if (e->rate_num == 0 || e->rate_den == 0)
    return e->rate_num == 0 ? "rate_num" : "rate_den";
  if (!e->encoder || !e->encoder[0])
    return "encoder";
  if (e->crf < -1 || e->crf > 51)
    return "crf";
  if (e->format && strcmp(e->format, "h264") != 0 && strcmp(e->format, "matroska") != 0)
    return "format";
  if (e->gop < 0 || e->bframes < -1 || e->threads < 0 || e->progress_fd < 0)
    return e->gop < 0 ? "gop" : e->bframes < -1 ? "bframes" : e->threads < 0 ? "threads" : "progress_fd";
  return NULL;
}

/* Raw frames of the given size, format and rate on stdin. */
static void encode_input(struct argv_b *b, const struct pirec_ffmpeg_encode *e)
{
  add(b, e->program ? e->program : "ffmpeg");
  add(b, "-hide_banner");
  add(b, "-nostdin"); /* stdin carries frames, never keyboard commands */
  add(b, "-nostats");
  add(b, "-loglevel");
  add(b, e->loglevel ? e->loglevel : "error");
  if (e->progress_fd > 0) {
    add(b, "-progress");
    addf(b, "pipe:%d", e->progress_fd);
  }
  add(b, "-f");
  add(b, "rawvideo");
  add(b, "-pix_fmt");
  add(b, e->pix_fmt);
  add(b, "-video_size");
  addf(b, "%dx%d", e->width, e->height);
  add(b, "-framerate");
  addf(b, "%u/%u", e->rate_num, e->rate_den);
  add(b, "-i");
  add(b, "pipe:0");
  add(b, "-map");
  add(b, "0:v:0");
  /* Every input frame becomes exactly one output frame: no duplicates, no drops. */
  add(b, e->legacy_vsync ? "-vsync" : "-fps_mode");
  add(b, "passthrough");
}

/* The encoder and its settings; annexb adds libx264's delimiters, which show where each access unit
 * starts in the byte stream. */
static void encode_codec(struct argv_b *b, const struct pirec_ffmpeg_encode *e, int annexb)
{
  add(b, "-c:v");
  add(b, e->encoder);
  if (e->preset && e->preset[0]) {
    add(b, "-preset");
    add(b, e->preset);
  }
  if (e->crf >= 0) {
    add(b, "-crf");
    addf(b, "%d", e->crf);
  }
  if (e->gop > 0) {
    add(b, "-g");
    addf(b, "%d", e->gop);
  }
  if (e->bframes >= 0) {
    add(b, "-bf");
    addf(b, "%d", e->bframes);
  }
  if (annexb) {
    add(b, "-aud");
    add(b, "1");
  }
  if (e->threads > 0) {
    add(b, "-threads");
    addf(b, "%d", e->threads);
  }
  if (e->out_pix_fmt && e->out_pix_fmt[0]) {
    add(b, "-pix_fmt");
    add(b, e->out_pix_fmt);
  }
}

int pirec_ffmpeg_encode_argv(const struct pirec_ffmpeg_encode *e, char ***argv_out)
{
  struct argv_b b = {0};
  const char *invalid = encode_invalid(e);
  int annexb = e->format && strcmp(e->format, "h264") == 0;

  *argv_out = NULL;
  if (invalid)
    return bad("ffmpeg encode", invalid);
  encode_input(&b, e);
  encode_codec(&b, e, annexb);
  if (annexb) {
    add(&b, "-f");
    add(&b, "h264");
  } else {
    /* Short clusters: after a crash or SIGKILL at most about a second of video is lost. */
    add(&b, "-cluster_time_limit");
    add(&b, "1000");
    add(&b, "-f");
    add(&b, "matroska");
  }
  add(&b, "-y");
  add(&b, e->output);
  return finish(&b, argv_out);
}

int pirec_ffmpeg_remux_argv(const struct pirec_ffmpeg_remux *r, char ***argv_out)
{
  struct argv_b b = {0};

  *argv_out = NULL;
  if (!r->input || !r->input[0])
    return bad("ffmpeg remux", "input");
  if (!r->output || !r->output[0])
    return bad("ffmpeg remux", "output");
  if (r->progress_fd < 0)
    return bad("ffmpeg remux", "progress_fd");

  add(&b, r->program ? r->program : "ffmpeg");
  add(&b, "-hide_banner");
  add(&b, "-nostdin");
  add(&b, "-nostats");
  add(&b, "-loglevel");
  add(&b, r->loglevel ? r->loglevel : "error");
  if (r->progress_fd > 0) {
    add(&b, "-progress");
    addf(&b, "pipe:%d", r->progress_fd);
  }
  add(&b, "-i");
  add(&b, r->input);
  add(&b, "-map");
  add(&b, "0");
  add(&b, "-c");
  add(&b, "copy");
  if (r->faststart) {
    add(&b, "-movflags");
    add(&b, "+faststart");
  }
  if (r->format && r->format[0]) {
    add(&b, "-f");
    add(&b, r->format);
  }
  add(&b, "-y");
  add(&b, r->output);
  return finish(&b, argv_out);
}

/* ---- probe ---- */

/* True when the -encoders listing has a line " V..... name " (flags, then the name). */
static int has_encoder(const char *list, const char *name)
{
  size_t nl = strlen(name);
  const char *line = list;

  while (line && *line) {
    const char *end = strchr(line, '\n');
    const char *p = line;
    while (*p == ' ')
      p++;
    /* skip the six flag characters */
    const char *flags = p;
    while (*p && *p != ' ' && *p != '\n')
      p++;
    if (p - flags == 6) {
      while (*p == ' ')
        p++;
      if (strncmp(p, name, nl) == 0 && (p[nl] == ' ' || p[nl] == '\n' || p[nl] == '\0'))
        return 1;
    }
    line = end ? end + 1 : NULL;
  }
  return 0;
}

/* out starts with "ffmpeg version ": "5.1.6-0+deb12u1", "n6.1", or a git hash (unknown). */
static void parse_version(const char *out, struct pirec_ffmpeg_info *info)
{
  const char *v = out + 15;
  int major, minor;

  if (*v == 'n')
    v++;
  if (sscanf(v, "%d.%d", &major, &minor) == 2) {
    info->major = major;
    info->minor = minor;
    info->legacy_vsync = major < 5 || (major == 5 && minor < 1);
  }
}

/* The synchronous probe is the asynchronous one on a private loop: children are made one way only
 * (pirec_job, and so through the spawn helper when the program runs one). */
struct sync_probe {
  int done;
  int status;
  struct pirec_ffmpeg_info *info;
  char *err;
  size_t errlen;
};

static void sync_probe_cb(int status, const struct pirec_ffmpeg_info *info, const char *err, void *user)
{
  struct sync_probe *sp = user;
  sp->done = 1;
  sp->status = status;
  if (status == 0)
    *sp->info = *info;
  if (sp->errlen)
    snprintf(sp->err, sp->errlen, "%s", err);
}

int pirec_ffmpeg_probe(const char *program, const char *encoder, struct pirec_ffmpeg_info *info, char *err,
                       size_t errlen)
{
  struct pirec_ffmpeg_info dummy;
  struct sync_probe sp = {.info = info ? info : &dummy, .err = err, .errlen = errlen};
  uv_loop_t loop;
  int rc;

  memset(sp.info, 0, sizeof *sp.info);
  if (errlen)
    err[0] = '\0';
  if ((rc = uv_loop_init(&loop)) != 0)
    return rc;
  rc = pirec_ffmpeg_probe_start(&loop, program, encoder, sync_probe_cb, &sp);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (rc == -ENOENT && errlen)
    snprintf(err, errlen, "cannot run ffmpeg '%s': %s (install the ffmpeg package or set the ffmpeg path)",
             program ? program : "ffmpeg", strerror(-rc));
  return rc != 0 ? rc : sp.status;
}

/* ---- the probe as child jobs ---- */

#define PROBE_OUT_MAX (256 * 1024)

struct probe {
  char *program;
  char *encoder;
  pirec_ffmpeg_probe_cb cb;
  void *user;
  uv_loop_t *loop;
  int stage; /* 0: -version, 1: -encoders */
  char *out;
  size_t len;
  struct pirec_ffmpeg_info info;
};

static void probe_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct probe *p = pirec_job_user(job);
  if (fd != 1 || p->len + len + 2 > PROBE_OUT_MAX)
    return;
  memcpy(p->out + p->len, line, len);
  p->len += len;
  p->out[p->len++] = '\n';
  p->out[p->len] = '\0';
}

static void probe_finish(struct probe *p, int status, const char *err)
{
  p->cb(status, &p->info, err, p->user);
  free(p->program);
  free(p->encoder);
  free(p->out);
  free(p);
}

static int probe_stage(struct probe *p);

static void probe_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct probe *p = pirec_job_user(job);
  char err[512];
  int stage = p->stage;

  pirec_job_free(job);
  if (r->reason == PIREC_JOB_END_FAILED) {
    /* through the spawn helper an exec failure comes here rather than from pirec_job_start() */
    snprintf(err, sizeof err,
             "cannot run ffmpeg '%s': %s (install the ffmpeg package or set the ffmpeg path)", p->program,
             strerror(-r->error));
    probe_finish(p, -ENOENT, err);
    return;
  }
  if (r->reason == PIREC_JOB_END_TIMEOUT_TOTAL) {
    snprintf(err, sizeof err, "ffmpeg '%s' did not answer within 10 s", p->program);
    probe_finish(p, -ETIMEDOUT, err);
    return;
  }
  if (stage == 0) {
    if (r->status != 0 || strncmp(p->out, "ffmpeg version ", 15) != 0) {
      snprintf(err, sizeof err, "'%s -version' %s: not an ffmpeg program", p->program,
               r->status != 0 ? "failed" : "printed no 'ffmpeg version' line");
      probe_finish(p, -EPROTO, err);
      return;
    }
    parse_version(p->out, &p->info);
    if (!p->encoder) {
      probe_finish(p, 0, "");
      return;
    }
    p->stage = 1;
    p->len = 0;
    p->out[0] = '\0';
    int e = probe_stage(p);
    if (e != 0) {
      snprintf(err, sizeof err, "cannot run ffmpeg '%s': %s", p->program, strerror(-e));
      probe_finish(p, -ENOENT, err);
    }
    return;
  }
  const char *list = strstr(p->out, "------");
  if (r->status != 0 || !list) {
    snprintf(err, sizeof err, "'%s -encoders' %s", p->program,
             r->status != 0 ? "failed" : "printed no encoder list");
    probe_finish(p, -EPROTO, err);
    return;
  }
  if (!has_encoder(list, p->encoder)) {
    snprintf(err, sizeof err,
             "ffmpeg '%s' has no encoder '%s' (install an ffmpeg built with it, "
             "or choose another encoder in the config)",
             p->program, p->encoder);
    probe_finish(p, -ENOTSUP, err);
    return;
  }
  probe_finish(p, 0, "");
}

static int probe_stage(struct probe *p)
{
  const char *argv[] = {p->program, "-hide_banner", p->stage == 0 ? "-version" : "-encoders", NULL};
  struct pirec_job_options o;
  struct pirec_job *job;
  int err;

  pirec_job_options_init(&o);
  o.argv = argv;
  o.name = "ffmpeg probe";
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.line_max = 1024;
  o.total_timeout_ms = 10000;
  o.stop_term_ms = 500;
  o.stop_kill_ms = 500;
  o.on_line = probe_line;
  o.on_end = probe_end;
  o.user = p;
  err = pirec_job_new(p->loop, &o, &job);
  if (err == 0) {
    err = pirec_job_start(job);
    if (err != 0)
      pirec_job_free(job);
  }
  return err;
}

int pirec_ffmpeg_probe_start(uv_loop_t *loop, const char *program, const char *encoder,
                             pirec_ffmpeg_probe_cb cb, void *user)
{
  struct probe *p;
  int err;

  if (!loop || !cb)
    return -EINVAL;
  p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->loop = loop;
  p->cb = cb;
  p->user = user;
  p->program = strdup(program ? program : "ffmpeg");
  p->encoder = encoder && encoder[0] ? strdup(encoder) : NULL;
  p->out = malloc(PROBE_OUT_MAX);
  if (!p->program || (encoder && encoder[0] && !p->encoder) || !p->out) {
    err = -ENOMEM;
    goto fail;
  }
  p->out[0] = '\0';
  err = probe_stage(p);
  if (err != 0)
    goto fail;
  return 0;

fail:
  free(p->program);
  free(p->encoder);
  free(p->out);
  free(p);
  return err;
}
