#ifndef PIREC_REMUX_H
#define PIREC_REMUX_H

/* The remux engine: turns one recorded video (.mkv, raw .h264, raw .mjpeg) plus its timing file
 * (a pirec frames CSV, or an rpicam-vid / mkvmerge "timecode format v2" pts file) into an MP4 or
 * MKV whose packet i is presented at the captured time of frame i, relative to the first frame.
 *
 * It is a stream copy with libavformat: packets are never decoded for their content or re-encoded.
 * (A raw H.264 stream with B-frames is run through the decoder once, only to learn which packet is
 * presented when; the packets written are still the input's bytes.)
 *
 * All calls are synchronous and block on disk I/O: run them in a child process (pirec-remux --one)
 * or a worker thread, never on a loop thread. The functions share no state, so different files may
 * be processed on different threads at once. Nothing here prints; failures are described in
 * pirec_remux_result.error and returned as negative errno / AVERROR values.
 *
 * Safety: the input video and timing file are only ever opened for reading. The output is written
 * to "<output>.part", reopened and verified, and only then renamed to its final name. The input is
 * removed only with PIREC_REMUX_REPLACE, and only after that verification passed.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pirec_remux_clock {
  PIREC_REMUX_CLOCK_AUTO = 0, /* device_ts_ns if every row has one and they strictly increase,
                                 else mono_ns (the reason is in clock_note) */
  PIREC_REMUX_CLOCK_DEVICE,   /* device_ts_ns; a row without one is an error */
  PIREC_REMUX_CLOCK_MONO,     /* mono_ns (CLOCK_MONOTONIC at capture) */
  PIREC_REMUX_CLOCK_WALL,     /* wall_ns (CLOCK_REALTIME; steps when NTP syncs) */
};

enum pirec_remux_format {
  PIREC_REMUX_MP4 = 0, /* time base 1/90000 */
  PIREC_REMUX_MKV,     /* time base 1/1000: Matroska stores milliseconds */
};

enum pirec_remux_flags {
  PIREC_REMUX_CFR = 1 << 0,              /* constant rate (N-1)/(t_last-t_first) instead of VFR */
  PIREC_REMUX_WRITE_TIMESTAMPS = 1 << 1, /* also write "<output>.timestamps.txt" (mkvmerge v2) */
  PIREC_REMUX_REPLACE = 1 << 2,          /* remove the input video after the output verified
                                            and was fsync'd (with its directory) */
  PIREC_REMUX_DRY_RUN = 1 << 3,          /* read and check everything, write nothing */
  PIREC_REMUX_ALLOW_CUT = 1 << 4,        /* accept a row/packet count mismatch without signs of a
                                            crash, keeping the frames that pair up */
};

struct pirec_remux_options {
  enum pirec_remux_format format;
  enum pirec_remux_clock clock;
  unsigned flags;          /* enum pirec_remux_flags */
  const char *timing_path; /* NULL: found next to the input (see pirec_remux_find_timing) */
  const char *output_path; /* NULL: derived from the input (see pirec_remux_output_path) */
  const char *key_file;    /* pirec-remux --key: the lab's secret key file; the session is encrypted
                              ([storage] encrypt_to): inputs are decrypted into memory, never to
                              disk, and outputs written encrypted (docs/PRIVACY.md) */
  const char *input_name;  /* NULL: path; else the name that tells the input's format (internal) */
};

/* What one file did. Filled on success and on failure (as far as the run got). */
struct pirec_remux_result {
  int64_t timing_rows; /* complete rows/lines in the timing file */
  int64_t packets;     /* complete packets read from the input video */
  int64_t frames;      /* frames written (min of the two, when a cut was allowed) */
  int64_t rows_cut;    /* timing rows without a complete packet (cut at the end) */
  int64_t packets_cut; /* packets without a complete timing row (cut at the end) */
  int64_t bytes_cut;   /* input bytes after the last complete packet that were not used */
  int partial_row;     /* the timing file's last line was incomplete and was ignored */
  int video_truncated; /* the video ended inside a packet or container element */
  enum pirec_remux_clock clock_used;
  char clock_note[256]; /* --clock auto only: why device_ts_ns was passed over, else empty */
  int reorder_depth;    /* 0 without B-frames, else how far decode order runs ahead */
  int64_t frames_moved; /* frames less than one output tick after the one before, put one tick
                           after it (two frames cannot share a pts) */
  int64_t max_moved_ns; /* the largest such shift, ns */
  int64_t first_ns;     /* timestamp of frame 0 on clock_used */
  int64_t before_start; /* leading frames from before the trial's start (before_start = 1 rows: the
                           GOP up to it, a pre-trigger buffer); they play first, at their own times */
  int64_t start_ns;     /* timestamp of the trial's first own frame on clock_used (frame
                           before_start); start_ns - first_ns is where the trial starts in the output */
  int64_t duration_ns;  /* t_last - t_first */
  int64_t input_bytes;
  char timing_path[4096];
  char output_path[4096];
  char error[1024]; /* empty on success; "file:line: what" or numbers on a mismatch */
};

/* Progress: called from inside pirec_remux_file on the calling thread, with bytes of input read so
 * far and the input's size; never after pirec_remux_file returned. May be NULL. */
typedef void (*pirec_remux_progress_cb)(int64_t done_bytes, int64_t total_bytes, void *user);

/* Timing of one file as loaded from its timing file. */
struct pirec_remux_timing {
  int64_t *t_ns;   /* count timestamps on the chosen clock (heap; pirec_remux_timing_free) */
  int64_t *bytes;  /* count sizes from the CSV's bytes column, -1 where unknown; may be NULL */
  int64_t *offset; /* count byte offsets from the CSV's offset column, -1 where unknown; may be NULL */
  int64_t count;
  int64_t before_start; /* leading rows marked before_start = 1 (0 without that column) */
  int64_t *line;        /* count physical lines (from 1) each entry starts on, for messages */
  int partial_row;
  enum pirec_remux_clock clock_used;
  char clock_note[256]; /* --clock auto only: why device_ts_ns was passed over, else empty */
};

/* Loads a frames CSV (parsed with libcsv) or a v2 pts file. Rows must carry strictly increasing
 * timestamps on the chosen clock. What editors and spreadsheets add is accepted: a UTF-8 byte order
 * mark, CRLF line ends, blank lines, lines starting with '#' (comments; in a CSV only outside a
 * quoted field), spaces around a value; CSV fields may be quoted and hold line breaks. Returns 0, or
 * a negative error with err (cap bytes) holding "path:line: column 'value' what is wrong", where
 * line is the physical line (from 1) the row starts on. On failure *timing is left empty. */
int pirec_remux_timing_load(const char *path, enum pirec_remux_clock clock, struct pirec_remux_timing *timing,
                            char *err, size_t cap);
/* Frees the arrays and leaves *timing empty; NULL is a no-op. */
void pirec_remux_timing_free(struct pirec_remux_timing *timing);

/* Finds the timing file for a video: "<stem>_frames.csv", else "<stem>.pts", else "<stem>_pts.txt".
 * Returns 0 with the path in out, or -ENOENT. */
int pirec_remux_find_timing(const char *video_path, char *out, size_t cap);

/* The default output name: "<stem>.mp4" / "<stem>.mkv", or "<stem>_timed.mkv" when that would be
 * the input itself. Returns 0 or -ENAMETOOLONG. */
int pirec_remux_output_path(const char *video_path, enum pirec_remux_format format, char *out, size_t cap);

/* Remuxes one file (see the top of this header). A crashed recording is recovered: when the timing
 * file's last line is partial or the video ends inside a packet, every frame with both a complete
 * row and a complete packet is written and the cut is counted in the result. Without such evidence
 * of truncation, a row/packet count mismatch is an error. Returns 0 or a negative error, with
 * result->error set. result must not be NULL; progress may be. */
int pirec_remux_file(const char *video_path, const struct pirec_remux_options *options,
                     struct pirec_remux_result *result, pirec_remux_progress_cb progress, void *user);

/* Checks an existing output against its timing: for every packet pts - pts0 == round(t_i - t_0)
 * in the output's time base (or the CFR grid with PIREC_REMUX_CFR), and the packet count against
 * what a remux would write now: the input found from the output's stem ("<stem>" without "_timed",
 * an elementary stream first, then .mkv, never one of pirec-remux's outputs) is dry-run to count
 * the frames it and the timing hold, and every output frame's payload (size and hash of its NAL
 * units, or bytes) must equal the input's frame; without an input, every complete row must have
 * its frame unless the timing's last line is partial, and payloads are not checked. A Matroska output whose Segment does not end with the
 * file fails as cut. Reads the whole input: block accordingly.
 * timing_path NULL: looked up from the output's stem like pirec_remux_find_timing. Returns 0, or
 * -EPROTO with the first mismatch's numbers in result->error, or another negative error. */
int pirec_remux_verify(const char *output_path, const struct pirec_remux_options *options,
                       struct pirec_remux_result *result);

/* Name of a clock for messages and JSON ("auto", "device", "mono", "wall"). */
const char *pirec_remux_clock_name(enum pirec_remux_clock clock);

/* ---- the pirec-remux command: many files, each in a supervised child ---- */

struct uv_loop_s;

struct pirec_remux_run_options {
  struct pirec_remux_options remux; /* timing_path/output_path only with a single file */
  unsigned jobs;                    /* children at once, >= 1 */
  int verify;                       /* check existing outputs instead of remuxing */
  int json;                         /* summary as one JSON object on out, instead of a table */
  int progress;                     /* draw progress bars on err (the app sets it when err is a terminal) */
  uint32_t timeout_s;               /* per file; 0: 30 s + 1 s per 2 MiB of input */
  const char *self_exe;             /* the pirec-remux binary to re-execute with --one */
  int live; /* also remux sessions still recording (session.json not final, its controller alive) */
  int join; /* a trial in segments (tNNN_s001.EXT, ...) is one item "tNNN.EXT": one output per trial */
};

/* Expands paths (session directories are searched for videos with a timing file; files are taken
 * as given), runs each file as "self_exe --one FILE ..." under a pirec_job queue with a timeout, so
 * a file that hangs or crashes its child fails alone. An input in a session that is still
 * recording is left alone (said on err, exit status 1) unless options->live. Prints the summary on out and progress on err.
 * Runs loop until every child ended; the loop must have nothing else on it. Returns the exit code:
 * 0 every file done, 1 some failed (or nothing was found). */
int pirec_remux_run(struct uv_loop_s *loop, const char *const *paths, int npaths,
                    const struct pirec_remux_run_options *options, FILE *out, FILE *err);

/* The child side (--one): remuxes or verifies one file, writing "progress DONE TOTAL" lines and one
 * final "result {json}" line on out. Returns 0 on success, 1 on failure. */
int pirec_remux_child(const char *path, const struct pirec_remux_options *options, int verify, FILE *out);

#endif
