/* Byte streams of rpicam-vid cut into frames, and its per-frame metadata lines. The lowest layer of
 * the camera's files: it calls none of them. */

#include "camera-int.h"

#include <errno.h>
#include <string.h>

/* ---- splitter ---- */

/* A frame is handed out from the buffer itself, so the buffer holds the partial frame plus what
 * one turn of the reader brings (libuv reads up to 32 times 64 KiB per turn); the margin is far
 * above that, and only a stream that never completes a frame reaches the cap. */
#define SPLIT_MARGIN ((size_t)8 << 20)

int pirec__camera_splitter_init(struct pirec__camera_splitter *sp, enum pirec__camera_split_mode mode,
                                size_t frame_bytes, size_t max_frame)
{
  size_t unit = mode == PIREC__CAMERA_SPLIT_SIZE ? frame_bytes : max_frame;

  memset(sp, 0, sizeof *sp);
  if ((mode == PIREC__CAMERA_SPLIT_SIZE && frame_bytes == 0) ||
      (mode == PIREC__CAMERA_SPLIT_JPEG && max_frame < 4))
    return -EINVAL;
  sp->mode = mode;
  sp->frame_bytes = frame_bytes;
  sp->max_frame = max_frame;
  return pirec_bytebuf_init(&sp->buf, 2 * unit, 4 * unit + SPLIT_MARGIN);
}

void pirec__camera_splitter_free(struct pirec__camera_splitter *sp)
{
  pirec_bytebuf_free(&sp->buf);
}

uint8_t *pirec__camera_splitter_space(struct pirec__camera_splitter *sp, size_t *avail)
{
  return pirec_bytebuf_space(&sp->buf, 1, avail);
}

void pirec__camera_splitter_fill(struct pirec__camera_splitter *sp, size_t n)
{
  pirec_bytebuf_fill(&sp->buf, n);
}

int pirec__camera_splitter_append(struct pirec__camera_splitter *sp, const uint8_t *data, size_t len)
{
  return pirec_bytebuf_append(&sp->buf, data, len);
}

uint64_t pirec__camera_splitter_skipped(const struct pirec__camera_splitter *sp)
{
  return sp->skipped;
}

/* What one step of the JPEG scanner found. */
enum { J_MORE, J_AGAIN, J_FRAME };

/* Drops n bytes that belong to no frame; the scan starts again from the front. */
static void drop_front(struct pirec__camera_splitter *sp, size_t n)
{
  sp->skipped += n;
  pirec_bytebuf_consume(&sp->buf, n);
  sp->scan = 0;
  sp->scan_state = 0;
}

/* Not a well-formed image after all: skip its SOI and look for the next one. */
static int jpeg_skip(struct pirec__camera_splitter *sp)
{
  drop_front(sp, 2);
  return J_AGAIN;
}

/* The first FF at or after i that has a byte after it, else n - 1 (the last byte, not looked at:
 * it may be the first half of a marker). memchr, because the scan for FF is where the splitter
 * spends its time (bench-camera --split). */
static size_t next_ff(const uint8_t *b, size_t i, size_t n)
{
  const uint8_t *ff = i + 1 < n ? memchr(b + i, 0xFF, n - 1 - i) : NULL;
  return ff ? (size_t)(ff - b) : (n > i ? n - 1 : i);
}

/* Before a frame: everything up to the next SOI (FF D8) is garbage. A trailing FF is kept, it may
 * be the first half of one. */
static int jpeg_find_soi(struct pirec__camera_splitter *sp, const uint8_t *b, size_t n)
{
  size_t i = sp->scan;

  while ((i = next_ff(b, i, n)) + 1 < n && b[i + 1] != 0xD8)
    i++;
  drop_front(sp, i);
  if (i + 1 >= n)
    return J_MORE;
  sp->scan = 2;
  sp->scan_state = 1;
  return J_AGAIN;
}

/* In the headers: one marker. Segments are skipped by their 2-byte length, not scanned, because
 * APPn may hold a thumbnail with its own EOI. */
static int jpeg_marker(struct pirec__camera_splitter *sp, const uint8_t *b, size_t n)
{
  size_t i = sp->scan;

  if (i + 4 > n)
    return J_MORE;
  if (b[i] != 0xFF)
    return jpeg_skip(sp);
  uint8_t m = b[i + 1];
  if (m == 0xFF) { /* fill byte */
    sp->scan = i + 1;
    return J_AGAIN;
  }
  if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
    sp->scan = i + 2;
    return J_AGAIN;
  }
  if (m == 0xD9) { /* EOI right after headers: a (degenerate) complete image */
    sp->scan = i + 2;
    return J_FRAME;
  }
  size_t seg = ((size_t)b[i + 2] << 8) | b[i + 3];
  if (seg < 2)
    return jpeg_skip(sp);
  sp->scan = i + 2 + seg;
  if (m == 0xDA)
    sp->scan_state = 2;
  return J_AGAIN;
}

/* After SOS: entropy-coded data, in which FF is followed by 00 (stuffing) or D0..D7 (restart
 * markers) until EOI; any other marker starts another segment (progressive JPEG: DHT/SOS between
 * scans). */
static int jpeg_entropy(struct pirec__camera_splitter *sp, const uint8_t *b, size_t n)
{
  size_t i = sp->scan;

  while ((i = next_ff(b, i, n)) + 1 < n) {
    uint8_t m = b[i + 1];
    if (m == 0x00 || m == 0xFF || (m >= 0xD0 && m <= 0xD7)) {
      i += m == 0xFF ? 1 : 2;
      continue;
    }
    sp->scan = m == 0xD9 ? i + 2 : i;
    if (m == 0xD9)
      return J_FRAME;
    sp->scan_state = 1;
    return J_AGAIN;
  }
  sp->scan = i;
  return J_MORE;
}

/* JPEG: SOI, marker segments, SOS, entropy-coded data, EOI. Anything else makes the scanner
 * resynchronise on the next SOI; so does an image longer than max_frame. Offsets are relative to
 * the unconsumed bytes, which the buffer may move between calls. */
static int jpeg_next(struct pirec__camera_splitter *sp, const uint8_t **frame, size_t *len)
{
  for (;;) {
    const uint8_t *b = pirec_bytebuf_data(&sp->buf);
    size_t n = pirec_bytebuf_len(&sp->buf);
    int r;

    if (sp->scan_state == 0)
      r = jpeg_find_soi(sp, b, n);
    else if (sp->scan > sp->max_frame)
      r = jpeg_skip(sp);
    else if (sp->scan_state == 1)
      r = jpeg_marker(sp, b, n);
    else
      r = jpeg_entropy(sp, b, n);
    if (r == J_MORE)
      return 0;
    if (r == J_FRAME) {
      *frame = b;
      *len = sp->scan;
      pirec_bytebuf_consume(&sp->buf, sp->scan);
      sp->scan = 0;
      sp->scan_state = 0;
      return 1;
    }
  }
}

int pirec__camera_splitter_next(struct pirec__camera_splitter *sp, const uint8_t **frame, size_t *len)
{
  if (sp->mode == PIREC__CAMERA_SPLIT_JPEG)
    return jpeg_next(sp, frame, len);
  if (pirec_bytebuf_len(&sp->buf) < sp->frame_bytes)
    return 0;
  *frame = pirec_bytebuf_data(&sp->buf);
  *len = sp->frame_bytes;
  pirec_bytebuf_consume(&sp->buf, sp->frame_bytes);
  return 1;
}

/* ---- metadata lines ---- */

int pirec__rpicam_metadata_line(const char *line, size_t len, int64_t *ns)
{
  static const char key[] = "SensorTimestamp=";
  const size_t klen = sizeof key - 1;

  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
    len--;
  if (len == 0)
    return PIREC__RPICAM_META_END;
  if (len < klen || memcmp(line, key, klen) != 0)
    return PIREC__RPICAM_META_OTHER;
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
  return PIREC__RPICAM_META_SENSOR_TS;
}
