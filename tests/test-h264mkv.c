/* The shared H.264 -> Matroska writer (media/mkv.h) on its own: a real x264 stream from
 * ffmpeg (lavfi testsrc2, access unit delimiters on) is split into access units, muxed into a real
 * pirec_sink on the real libuv loop, and the file is read back with the real ffprobe: packet count,
 * keyframes, pts, picture size, the seal of a clean close (computed, and written by the shared
 * pirec_mkv_seal_file), a cut file, and a failing sink. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "h264.h"
#include "mkv.h"
#include "helpers/remux-gen.h"
#include "pirec/sink.h"

enum { FRAMES = 60, GOP = 15, W = 160, H = 120 };

struct au_copy {
  uint8_t *data;
  size_t len;
};

struct fixture {
  char dir[256];
  char h264[512];
  char mkv[512];
  struct au_copy aus[FRAMES + 8];
  int n_aus;
};

/* Frame i's capture time: 30 fps. */
static int64_t pts_ns(int i)
{
  return (int64_t)i * 1000000000 / 30;
}

static uint8_t *read_all(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  assert_int_equal(fstat(fileno(f), &st), 0);
  uint8_t *b = malloc((size_t)st.st_size + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)st.st_size, f), (size_t)st.st_size);
  fclose(f);
  *len = (size_t)st.st_size;
  return b;
}

/* The stream ffmpeg wrote, fed to the splitter in odd-sized pieces so delimiters straddle them. */
static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(remux_gen_tmpdir(f->dir, sizeof f->dir), 0);
  snprintf(f->h264, sizeof f->h264, "%s/in.h264", f->dir);
  snprintf(f->mkv, sizeof f->mkv, "%s/out.mkv", f->dir);
  char frames[16], gop[64];
  snprintf(frames, sizeof frames, "%d", FRAMES);
  snprintf(gop, sizeof gop, "aud=1:keyint=%d:min-keyint=%d:scenecut=0", GOP, GOP);
  char *argv[] = {"ffmpeg",    "-nostdin", "-v",
                  "error",     "-y",       "-f",
                  "lavfi",     "-i",       "testsrc2=size=160x120:rate=30",
                  "-frames:v", frames,     "-c:v",
                  "libx264",   "-preset",  "ultrafast",
                  "-bf",       "0",        "-x264-params",
                  gop,         "-f",       "h264",
                  f->h264,     NULL};
  assert_int_equal(remux_gen_run(argv, NULL, 0), 0);

  size_t len;
  uint8_t *in = read_all(f->h264, &len);
  struct pirec_h264_splitter au;
  assert_int_equal(pirec_h264_splitter_init(&au, 4096), 0);
  const uint8_t *d;
  size_t n;
  for (size_t off = 0; off < len;) {
    size_t piece = len - off < 777 ? len - off : 777;
    uint8_t *space = pirec_h264_splitter_space(&au, piece);
    assert_non_null(space);
    memcpy(space, in + off, piece);
    pirec_h264_splitter_fill(&au, piece);
    off += piece;
    while (pirec_h264_splitter_next(&au, &d, &n)) {
      assert_true(f->n_aus < FRAMES + 8);
      f->aus[f->n_aus].data = malloc(n);
      assert_non_null(f->aus[f->n_aus].data);
      memcpy(f->aus[f->n_aus].data, d, n);
      f->aus[f->n_aus++].len = n;
    }
  }
  if (pirec_h264_splitter_last(&au, &d, &n)) {
    f->aus[f->n_aus].data = malloc(n);
    assert_non_null(f->aus[f->n_aus].data);
    memcpy(f->aus[f->n_aus].data, d, n);
    f->aus[f->n_aus++].len = n;
  }
  assert_int_equal(pirec_h264_splitter_last(&au, &d, &n), 0);
  pirec_h264_splitter_free(&au);
  free(in);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  for (int i = 0; i < f->n_aus; i++)
    free(f->aus[i].data);
  remux_gen_rmrf(f->dir);
  free(f);
  return 0;
}

/* ---- a sink on the real loop ---- */

struct closed {
  int done;
  struct pirec_sink_counters final;
};

static void on_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  (void)sink;
  struct closed *c = user;
  c->final = *final;
  c->done = 1;
}

static void close_sink(uv_loop_t *loop, struct pirec_sink *sink, struct closed *c)
{
  pirec_sink_close(sink, on_closed, c);
  while (!c->done)
    uv_run(loop, UV_RUN_ONCE);
}

/* ---- ffprobe ---- */

struct probe {
  int packets, keys;
  int64_t pts[FRAMES + 8];
  int key[FRAMES + 8];
  int width, height;
  const char *path;
};

/* Packets (pts, keyframe flag) and the stream's size as ffprobe reads them; 0 or its exit status. */
static int probe(const char *path, struct probe *p)
{
  static char out[1 << 16];
  memset(p, 0, sizeof *p);
  p->path = path;
  char *pk[] = {"ffprobe",          "-v",  "error",   "-select_streams", "v:0", "-show_entries",
                "packet=pts,flags", "-of", "csv=p=0", (char *)path,      NULL};
  int r = remux_gen_run(pk, out, sizeof out);
  if (r != 0)
    return r;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    long long pts;
    char flags[16];
    if (sscanf(line, "%lld,%15s", &pts, flags) != 2)
      fail_msg("ffprobe line '%s' of '%s'", line, path);
    assert_true(p->packets < FRAMES + 8);
    p->pts[p->packets] = pts;
    p->key[p->packets] = flags[0] == 'K';
    p->keys += flags[0] == 'K';
    p->packets++;
  }
  char *st[] = {"ffprobe",
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
                (char *)path,
                NULL};
  if ((r = remux_gen_run(st, out, sizeof out)) != 0)
    return r;
  if (sscanf(out, "%d,%d", &p->width, &p->height) != 2)
    fail_msg("ffprobe size '%s' of '%s'", out, path);
  return 0;
}

/* ---- the file's own keyframe flags ----
 * ffprobe's packet flags come from libavformat's H.264 parser, not from the container, so the
 * SimpleBlocks' keyframe bits (0x80 of their flags byte) are read here directly: EBML header,
 * Segment (unknown size: its children follow), Clusters (known size) and their SimpleBlocks. */

static size_t vint(const uint8_t *b, size_t n, uint64_t *v, int keep_marker)
{
  if (n == 0 || b[0] == 0)
    return 0;
  size_t len = 1;
  while (!(b[0] & (0x80 >> (len - 1))))
    len++;
  if (len > n)
    return 0;
  uint64_t x = keep_marker ? b[0] : b[0] & (0xFFu >> len);
  for (size_t i = 1; i < len; i++)
    x = x << 8 | b[i];
  *v = x;
  return len;
}

/* Keyframe bits of the SimpleBlocks in file order; returns their count (at most cap). */
static int block_keys(const char *path, int *keys, int cap)
{
  size_t n, pos = 0;
  uint8_t *b = read_all(path, &n);
  int count = 0;
  while (pos < n) {
    uint64_t id, size;
    size_t a = vint(b + pos, n - pos, &id, 1), c;
    if (!a || !(c = vint(b + pos + a, n - pos - a, &size, 0)))
      break;
    pos += a + c;
    int unknown = size == (UINT64_MAX >> (64 - 7 * c));
    if (id == 0x18538067 || id == 0x1F43B675)
      continue; /* Segment, Cluster: descend into the children */
    if (unknown || size > n - pos)
      break; /* cut inside an element */
    if (id == 0xA3 && size >= 4 && count < cap) {
      uint64_t track;
      size_t t = vint(b + pos, (size_t)size, &track, 0);
      assert_true(t > 0 && t + 3 <= size);
      keys[count++] = (b[pos + t + 2] & 0x80) != 0;
    }
    pos += (size_t)size;
  }
  free(b);
  return count;
}

/* Every packet i of a file written from access unit 0 on is frame i at its time in ms, and a
 * keyframe in the container exactly where x264 put an IDR. */
static void assert_packets(struct fixture *f, const struct probe *p, int n)
{
  assert_int_equal(p->packets, n);
  int keys = 0;
  for (int i = 0; i < n; i++) {
    if (p->pts[i] != pts_ns(i) / 1000000)
      fail_msg("packet %d: pts %lld ms, want %lld", i, (long long)p->pts[i],
               (long long)(pts_ns(i) / 1000000));
    int idr = pirec_h264_is_keyframe(f->aus[i].data, f->aus[i].len);
    if (p->key[i] != idr)
      fail_msg("packet %d: keyframe flag %d, the access unit's IDR %d", i, p->key[i], idr);
    keys += idr;
  }
  assert_int_equal(p->keys, keys);
  int bk[FRAMES + 8];
  int nb = block_keys(p->path, bk, FRAMES + 8);
  if (nb < n)
    fail_msg("'%s': %d SimpleBlocks, ffprobe read %d packets", p->path, nb, n);
  for (int i = 0; i < n; i++)
    if (bk[i] != pirec_h264_is_keyframe(f->aus[i].data, f->aus[i].len))
      fail_msg("SimpleBlock %d: keyframe bit %d, access unit's IDR %d", i, bk[i],
               pirec_h264_is_keyframe(f->aus[i].data, f->aus[i].len));
}

static int64_t file_size(const char *path)
{
  struct stat st;
  if (stat(path, &st) != 0)
    fail_msg("stat '%s': %s", path, strerror(errno));
  return (int64_t)st.st_size;
}

/* Writes units [0, n) with the given size/rate; returns the writer, finished and its sink closed.
 * bad_first: first offers unit 1 (a P picture without SPS/PPS), which cannot start a file: -EINVAL,
 * nothing written, not latched. */
static struct pirec_mkv *write_file(struct fixture *f, uv_loop_t *loop, int w, int h, int fps_num, int n,
                                    int bad_first, struct closed *c)
{
  struct pirec_sink *sink;
  struct pirec_mkv *m;
  assert_int_equal(pirec_sink_new(loop, f->mkv, NULL, NULL, NULL, &sink), 0);
  assert_int_equal(pirec_mkv_new(sink, w, h, fps_num, 1, &m), 0);
  assert_int_equal(pirec_mkv_started(m), 0);
  if (bad_first) {
    assert_int_equal(pirec_mkv_write(m, f->aus[1].data, f->aus[1].len, 0, 0), -EINVAL);
    assert_int_equal(pirec_mkv_started(m), 0);
    assert_int_equal(pirec_mkv_bytes(m), 0);
  }
  for (int i = 0; i < n; i++) {
    int key = pirec_h264_is_keyframe(f->aus[i].data, f->aus[i].len);
    int r = pirec_mkv_write(m, f->aus[i].data, f->aus[i].len, key, pts_ns(i));
    if (r != 0)
      fail_msg("write of access unit %d (%zu bytes): %d", i, f->aus[i].len, r);
    uv_run(loop, UV_RUN_NOWAIT); /* the sink drains while frames arrive */
  }
  assert_int_equal(pirec_mkv_started(m), 1);
  assert_int_equal(pirec_mkv_finish(m), 0);
  close_sink(loop, sink, c);
  assert_int_equal(c->final.error, 0);
  return m;
}

/* The splitter found every frame; x264 put an IDR every GOP frames. */
static void test_split(void **state)
{
  struct fixture *f = *state;
  assert_int_equal(f->n_aus, FRAMES);
  for (int i = 0; i < f->n_aus; i++) {
    /* each unit starts with its delimiter: 00 00 00 01 09 or 00 00 01 09 */
    const uint8_t *d = f->aus[i].data;
    int aud = (d[0] == 0 && d[1] == 0 && d[2] == 1 && (d[3] & 0x1F) == 9) ||
              (d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 1 && (d[4] & 0x1F) == 9);
    if (!aud)
      fail_msg("access unit %d does not start with a delimiter", i);
    assert_int_equal(pirec_h264_is_keyframe(d, f->aus[i].len), i % GOP == 0);
  }
}

/* The eye tracker's use: no size given (learned from the first SPS), no rate; a clean close sealed
 * with the real segment size, which ffprobe still reads. */
static void test_size_from_sps_and_seal(void **state)
{
  struct fixture *f = *state;
  uv_loop_t loop;
  struct closed c = {0};
  struct probe p;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_mkv *m = write_file(f, &loop, 0, 0, 0, FRAMES, 0, &c);

  assert_int_equal(c.final.bytes_written, pirec_mkv_bytes(m));
  assert_int_equal(file_size(f->mkv), (int64_t)pirec_mkv_bytes(m));
  assert_int_equal(probe(f->mkv, &p), 0);
  assert_int_equal(p.width, W);
  assert_int_equal(p.height, H);
  assert_packets(f, &p, FRAMES);
  assert_int_equal(p.keys, FRAMES / GOP);

  int64_t off;
  uint8_t seal[8];
  assert_int_equal(pirec_mkv_seal(m, &off, seal), 0);
  uint8_t was[8];
  int fd = open(f->mkv, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, was, 8, off), 8);
  /* the field held "unknown" (01 FF FF FF FF FF FF FF); the seal names everything after it */
  static const uint8_t unknown[8] = {0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  assert_memory_equal(was, unknown, 8);
  uint64_t body = 0;
  for (int i = 1; i < 8; i++)
    body = body << 8 | seal[i];
  assert_int_equal(seal[0], 0x01);
  assert_int_equal(body, (uint64_t)(file_size(f->mkv) - off - 8));
  assert_int_equal(pwrite(fd, seal, 8, off), 8);
  close(fd);
  assert_int_equal(probe(f->mkv, &p), 0);
  assert_packets(f, &p, FRAMES);

  pirec_mkv_free(m);
  assert_int_equal(uv_loop_close(&loop), 0);
}

struct seal_wait {
  int calls;
  int status;
};

static void on_sealed(struct pirec_mkv_sealer *s, int status)
{
  struct seal_wait *w = s->data;
  w->calls++;
  w->status = status;
}

/* The segment's size field as a tiny EBML read finds it: EBML header skipped, then the Segment's
 * ID and size. *data_start is where the segment's children begin. */
static uint64_t segment_size(const char *path, int64_t *data_start)
{
  size_t n, pos = 0, a, c;
  uint64_t id, size;
  uint8_t *b = read_all(path, &n);
  if (!(a = vint(b, n, &id, 1)) || id != 0x1A45DFA3 || !(c = vint(b + a, n - a, &size, 0)))
    fail_msg("'%s': no EBML header", path);
  pos = a + c + (size_t)size;
  if (pos >= n || !(a = vint(b + pos, n - pos, &id, 1)) || id != 0x18538067 ||
      !(c = vint(b + pos + a, n - pos - a, &size, 0)))
    fail_msg("'%s': no Segment after the EBML header at %zu", path, pos);
  *data_start = (int64_t)(pos + a + c);
  free(b);
  return size;
}

/* The shared seal step both recorders use after their sink closed: the file's segment then says
 * its real size (file size minus where its children start) and ffprobe still reads every packet.
 * The writer may go right after the call. A file whose bytes did not all arrive is refused without
 * a callback; an open that fails reaches the callback with its error. */
static void test_seal_file(void **state)
{
  struct fixture *f = *state;
  uv_loop_t loop;
  struct closed c = {0};
  struct probe p;
  struct pirec_mkv_sealer s;
  struct seal_wait w = {0};
  int64_t start;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_mkv *m = write_file(f, &loop, 0, 0, 0, FRAMES, 0, &c);
  int64_t size = file_size(f->mkv);
  uint64_t unknown = segment_size(f->mkv, &start);
  assert_int_equal(unknown, 0x00FFFFFFFFFFFFFFull); /* as streamed: "unknown" in 8 bytes */

  s.data = &w;
  assert_int_equal(pirec_mkv_seal_file(&loop, &s, m, f->mkv, c.final.bytes_written - 1, on_sealed), -EINVAL);
  char missing[600];
  snprintf(missing, sizeof missing, "%s/no-such-dir/x.mkv", f->dir);
  assert_int_equal(pirec_mkv_seal_file(&loop, &s, m, missing, c.final.bytes_written, on_sealed), 0);
  assert_int_equal(w.calls, 0); /* never inside the call */
  while (w.calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.status, -ENOENT);
  assert_int_equal(file_size(f->mkv), size);
  assert_int_equal(segment_size(f->mkv, &start), unknown);

  w.calls = 0;
  assert_int_equal(pirec_mkv_seal_file(&loop, &s, m, f->mkv, c.final.bytes_written, on_sealed), 0);
  pirec_mkv_free(m);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(w.calls, 1);
  if (w.status != 0)
    fail_msg("sealing '%s': %d", f->mkv, w.status);
  assert_int_equal(file_size(f->mkv), size);
  uint64_t sealed = segment_size(f->mkv, &start);
  if (sealed != (uint64_t)(size - start))
    fail_msg("'%s': segment size %llu, file %lld bytes with children from %lld", f->mkv,
             (unsigned long long)sealed, (long long)size, (long long)start);
  assert_int_equal(probe(f->mkv, &p), 0);
  assert_int_equal(p.width, W);
  assert_packets(f, &p, FRAMES);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* The camera's use: size and rate from its format. A first unit without SPS/PPS cannot start a
 * file, and the next unit that can starts it. */
static void test_fixed_size_and_bad_first_unit(void **state)
{
  struct fixture *f = *state;
  uv_loop_t loop;
  struct closed c = {0};
  struct pirec_sink *sink;
  struct probe p;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_mkv *m = write_file(f, &loop, W, H, 30, GOP, 1, &c);
  assert_true(pirec_mkv_margin() >= (2u << 20)); /* a cluster fits in what the camera keeps free */
  assert_int_equal(c.final.bytes_written, pirec_mkv_bytes(m));
  assert_int_equal(probe(f->mkv, &p), 0);
  assert_int_equal(p.width, W);
  assert_int_equal(p.height, H);
  assert_packets(f, &p, GOP);
  pirec_mkv_free(m);

  /* With no unit ever written, finish is a no-op and there is nothing to seal. */
  c.done = 0;
  assert_int_equal(pirec_sink_new(&loop, f->mkv, NULL, NULL, NULL, &sink), 0);
  assert_int_equal(pirec_mkv_new(sink, 0, 0, 0, 0, &m), 0);
  assert_int_equal(pirec_mkv_finish(m), 0);
  int64_t off;
  uint8_t seal[8];
  assert_int_equal(pirec_mkv_seal(m, &off, seal), -EINVAL);
  close_sink(&loop, sink, &c);
  assert_int_equal(file_size(f->mkv), 0);
  pirec_mkv_free(m);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A file cut short (power loss; no trailer) stays readable: ffprobe gets a prefix of the packets,
 * each at its own pts. */
static void test_truncated(void **state)
{
  struct fixture *f = *state;
  uv_loop_t loop;
  struct closed c = {0};
  struct probe p;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_mkv *m = write_file(f, &loop, 0, 0, 0, FRAMES, 0, &c);
  int64_t size = file_size(f->mkv);
  pirec_mkv_free(m);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(remux_gen_truncate(f->mkv, size * 6 / 10), 0);
  assert_int_equal(probe(f->mkv, &p), 0);
  if (p.packets <= 0 || p.packets >= FRAMES)
    fail_msg("cut at %lld of %lld bytes: %d packets", (long long)(size * 6 / 10), (long long)size, p.packets);
  assert_packets(f, &p, p.packets);
  assert_true(p.keys >= 1);
}

/* A sink that stops taking bytes: the first failed push is returned, latched, and the file cannot
 * be sealed. */
static void test_sink_full(void **state)
{
  struct fixture *f = *state;
  uv_loop_t loop;
  struct closed c = {0};
  struct pirec_sink *sink;
  struct pirec_mkv *m;
  struct pirec_sink_options o;
  assert_int_equal(uv_loop_init(&loop), 0);
  pirec_sink_options_default(&o);
  o.ring_bytes = 128 * 1024; /* more than one AVIO buffer (64 KiB), less than the stream */
  o.batch_bytes = 16 * 1024;
  assert_int_equal(pirec_sink_new(&loop, f->mkv, &o, NULL, NULL, &sink), 0);
  pirec_sink_hold(sink, 1);
  assert_int_equal(pirec_mkv_new(sink, 0, 0, 0, 0, &m), 0);
  int r = 0, i;
  /* the stream round and round (about 94 KB a round) until the ring is full */
  for (i = 0; i < 10 * FRAMES && r == 0; i++) {
    const struct au_copy *u = &f->aus[i % FRAMES];
    r = pirec_mkv_write(m, u->data, u->len, pirec_h264_is_keyframe(u->data, u->len), pts_ns(i));
  }
  if (r != -ENOBUFS)
    fail_msg("held 128 KiB sink after %d units: %d, want -ENOBUFS", i, r);
  assert_int_equal(pirec_mkv_write(m, f->aus[0].data, f->aus[0].len, 1, pts_ns(i)), -ENOBUFS);
  assert_int_equal(pirec_mkv_finish(m), -ENOBUFS);
  int64_t off;
  uint8_t seal[8];
  assert_int_equal(pirec_mkv_seal(m, &off, seal), -EINVAL);
  close_sink(&loop, sink, &c);
  assert_int_equal(c.final.bytes_written, pirec_mkv_bytes(m));
  pirec_mkv_free(m);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_split, setup, teardown),
      cmocka_unit_test_setup_teardown(test_size_from_sps_and_seal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_seal_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fixed_size_and_bad_first_unit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sink_full, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
