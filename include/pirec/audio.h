#ifndef PIREC_AUDIO_H
#define PIREC_AUDIO_H

/* The audio recorder: an ALSA capture device into tNNN_audio.wav and tNNN_audio_blocks.csv
 * (docs/AUDIO.md, docs/FORMATS.md).
 *
 * A trial opens the PCM (libasound, blocking reads with a bounded snd_pcm_wait so a stop is seen
 * within 100 ms), with timestamps enabled and typed CLOCK_MONOTONIC, and starts one named capture
 * thread. Each period read is one block: its samples are copied into the WAV file's sink ring and
 * one row into the blocks CSV's sink ring; the thread makes no other system call and never waits
 * for the disk. A block refused by a full ring is dropped whole and its frames are counted in the
 * next row's dropped_before, as are the frames an overrun (xrun) lost, measured from the device
 * timestamps on both sides of the gap; the xrun itself is recovered (snd_pcm_recover) and counted.
 *
 * The WAV file starts with an 80-byte header whose sizes say "unknown, read to the end" (what
 * ffmpeg and sox accept), so a file cut short by a crash plays; closing the trial rewrites the
 * header with the final sizes in libuv's threadpool, as RF64 (its ds64 chunk taking the place of
 * the JUNK chunk) once the data passes 4 GiB.
 *
 * Heap object: pirec_audio_new / pirec_audio_free. Everything but the capture thread runs on the
 * loop thread. Errors are negative errno values.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_audio;
struct pirec_crypt_key;

enum pirec_audio_format {
  PIREC_AUDIO_S16 = 0, /* signed 16-bit little endian (WAV PCM) */
  PIREC_AUDIO_S32,     /* signed 32-bit little endian (WAV PCM) */
  PIREC_AUDIO_F32,     /* IEEE float 32-bit little endian (WAV format 3) */
};

struct pirec_audio_options {
  const char *device; /* ALSA PCM name, e.g. "default", "hw:1,0", "plughw:CARD=Mic"; copied */
  unsigned rate;      /* frames per second; default 48000 */
  unsigned channels;  /* default 1 */
  enum pirec_audio_format format;
  unsigned period_us;         /* one block's length; default 20000 (20 ms) */
  unsigned buffer_periods;    /* the device buffer holds this many periods; default 8 */
  size_t ring_bytes;          /* the WAV sink's ring; 0: two seconds of audio, at least 1 MiB */
  unsigned fsync_interval_ms; /* PIREC_SINK_FSYNC_NEVER (0) for none; taken as given */
};

struct pirec_audio_counters {
  uint64_t blocks;         /* blocks written (rows in the CSV) */
  uint64_t frames;         /* frames written to WAV files */
  uint64_t frames_dropped; /* frames lost: xruns and blocks refused by a full ring */
  uint64_t xruns;          /* overruns recovered */
  uint64_t rows_dropped;   /* CSV rows refused by a full ring (their block is in the WAV) */
  uint64_t bytes_written;  /* WAV and CSV bytes written, closed files included */
  /* The card's clock against CLOCK_MONOTONIC over the current (or last) trial, in parts per
   * billion (positive: the card counts more frames than CLOCK_MONOTONIC's time holds at the
   * nominal rate, i.e. runs fast), from the device timestamps and frame positions of its first
   * and latest blocks; drift_known is 0 until a second of blocks with timestamps is in. */
  int64_t clock_drift_ppb;
  int drift_known;
  int error;     /* 0, or the negative errno that stopped the device or a file */
  int recording; /* 1 while a trial's files are open */
};

/* The status callback of open and close: 0 or a negative errno. */
typedef void (*pirec_audio_cb)(struct pirec_audio *audio, int status, void *user);

void pirec_audio_options_default(struct pirec_audio_options *opts);

/* Parses "s16", "s32" or "f32". Returns 0 or -EINVAL. */
int pirec_audio_format_parse(const char *text, enum pirec_audio_format *out);

/* Bytes of one sample of format. */
unsigned pirec_audio_format_bytes(enum pirec_audio_format format);

/* opts may be NULL for the defaults (device "default"). Returns 0 and *out, -EINVAL or -ENOMEM. */
int pirec_audio_new(uv_loop_t *loop, const struct pirec_audio_options *opts, struct pirec_audio **out);

/* Encrypts the files of trials started from now on under key (copied; NULL: clear files; see
 * docs/PRIVACY.md). An encrypted WAV keeps its "read to the end" header. Returns 0 or -ENOMEM. */
int pirec_audio_set_key(struct pirec_audio *audio, const struct pirec_crypt_key *key,
                        const char *session_dir);

/* Opens the PCM (on the loop thread: libasound's open and parameter calls do not touch the disk
 * beyond its configuration, read once per process), creates DIR/tNNN[_pP]_audio.wav and
 * DIR/tNNN[_pP]_audio_blocks.csv (DIR made if missing; part > 0 adds _pP) and starts capturing.
 * Returns 0 (cb is not called: the open is synchronous), -EBUSY (a trial is open), or the device's
 * error (-ENOENT: no such PCM; -EBUSY: in use; -EINVAL: the rate, channels or format refused), with
 * a message for the operator in pirec_audio_last_error(). */
int pirec_audio_open(struct pirec_audio *audio, const char *dir, int trial, int part);

/* What went wrong in the last failed open ("cannot open ALSA device 'x': ..."), or "". */
const char *pirec_audio_last_error(const struct pirec_audio *audio);

/* Stops the capture thread (within one period or 100 ms), writes out every block, closes both
 * files, rewrites the WAV header with its final sizes, then runs cb with 0 or the first error.
 * -ENOTCONN when no trial is open (cb never runs). */
int pirec_audio_close_file(struct pirec_audio *audio, pirec_audio_cb cb, void *user);

/* Runs on the loop thread when the trial's capture or a file stops on an error (the device went
 * away, the disk is full), once per trial, with the negative errno and a message for the operator
 * ("capture from 'hw:1,0' stopped: No such device"; valid during the call). The trial stays open
 * until pirec_audio_close_file(); the counters' error says the same. cb NULL: none. */
typedef void (*pirec_audio_error_cb)(struct pirec_audio *audio, int err, const char *message, void *user);
void pirec_audio_on_error(struct pirec_audio *audio, pirec_audio_error_cb cb, void *user);

/* Test hook: while held, the capture thread stops reading (as a stalled system would), so the
 * device overruns; releasing resumes reading. Any thread. */
void pirec_audio_hold(struct pirec_audio *audio, int hold);

void pirec_audio_counters(const struct pirec_audio *audio, struct pirec_audio_counters *out);

/* Frees audio; no trial may be open. NULL is a no-op. */
void pirec_audio_free(struct pirec_audio *audio);

/* ---- WAV header (recorders/audio/wav.c), public for pirec-remux and the tests ---- */

#define PIREC_AUDIO_WAV_HEADER 80

/* Writes the 80-byte header for data_bytes of audio (UINT64_MAX: unknown, "read to the end"),
 * as RIFF, or as RF64 with a ds64 chunk when data_bytes does not fit 32 bits. */
void pirec_audio_wav_header(uint8_t out[PIREC_AUDIO_WAV_HEADER], enum pirec_audio_format format,
                            unsigned rate, unsigned channels, uint64_t data_bytes);

#endif
