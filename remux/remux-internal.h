#ifndef PIREC_REMUX_INTERNAL_H
#define PIREC_REMUX_INTERNAL_H

/* Shared by the engine (remux.c, timing.c) and the command driver (run.c). */
#include "pirec/remux.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What pirec-remux writes as the Matroska WritingApp (and MP4 encoder tag) of its outputs, so a
 * later scan does not take them for recordings. */
#define PIREC__REMUX_WRITING_APP "pirec-remux"

/* 1 if path is a Matroska file whose WritingApp says pirec-remux wrote it. Reads only the first
 * 4 KiB (the EBML header and the Segment's Info), so it is cheap enough for a directory scan;
 * 0 for anything else, unreadable files included. */
int pirec__remux_is_own_output(const char *path);

/* pirec_remux_verify with progress: checking an output runs a dry remux of its input, which reads
 * the whole input, and a supervisor must see that the child is alive. */
int pirec__remux_verify(const char *output_path, const struct pirec_remux_options *options,
                        struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user);

/* 1 if name ends with an elementary-stream extension (.h264, .264, .mjpeg, .mjpg, .hevc, .h265). */
int pirec__remux_is_raw_name(const char *name);

/* Grows *array, a malloc'd array of *cap items of elem bytes (NULL and 0 at first), so that it
 * holds item n. Returns 0, or -ENOMEM with the array as it was. */
int pirec__remux_grow(void *array, size_t n, size_t *cap, size_t elem);

/* Internal flag of pirec_remux_file: fsync the output and its directory as PIREC_REMUX_REPLACE does,
 * but leave the input: pirec-remux's parent removes it once it holds the child's ok result. */
#define PIREC__REMUX_SYNC (1u << 16)
/* Internal flag: output_path is memory (a memfd's /proc/self/fd/N): written there straight, no .part,
 * no rename, no sync; the input's name for its format is options->input_name (pirec-remux --key). */
#define PIREC__REMUX_IN_MEMORY (1u << 17)

/* pirec-remux --key (remux/crypt.c): remuxes the encrypted video path of a session encrypted with
 * [storage] encrypt_to, decrypting it and its timing file into memory (memfd) and writing the output
 * encrypted under the session key. Same contract as pirec_remux_file. */
int pirec__remux_encrypted(const char *path, const struct pirec_remux_options *options,
                           struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user);

/* ---- join.c: a trial recorded in segments read as one input (pirec-remux --join) ---- */

/* 1 when path ("<stem><ext>") does not exist but "<stem>_s001<ext>" does: a trial in segments. */
int pirec__remux_is_segmented(const char *path);

struct pirec__remux_join {
  int count;        /* segments joined */
  int64_t bytes;    /* their sizes summed */
  char input[8192]; /* what libavformat opens: "concat:A|B|..." or, for Matroska, an ffconcat list */
  char timing[64];  /* the joined frames CSV (/proc/self/fd/N) */
  char last[4200];  /* the last segment (the only one a crash can have cut) */
  char error[4400]; /* why _open failed */
  int timing_fd, list_fd;
};

/* Joins the segments of path (see above); mkv: they are Matroska files (the concat demuxer, safe 0).
 * Returns 0, or a negative errno with j->error set. _close releases it (also after a failure). */
int pirec__remux_join_open(const char *path, int mkv, struct pirec__remux_join *j);
void pirec__remux_join_close(struct pirec__remux_join *j);

/* ---- digest.c: a frame's payload, independent of the container's framing ---- */

struct AVCodecParameters;

/* What a frame holds: its NAL units' bytes (Annex B start codes or avcC/hvcC length prefixes
 * removed, trailing zero bytes of a unit too), or for other codecs the packet's bytes. Two packets
 * of one frame, before and after a remux, have the same digest. */
struct pirec__remux_digest {
  int64_t size;  /* payload bytes counted; -1: unknown */
  uint64_t hash; /* FNV-1a over the units and their lengths */
};

/* Digest of one packet of a stream with parameters par. */
void pirec__remux_digest(const struct AVCodecParameters *par, const uint8_t *data, int size,
                         struct pirec__remux_digest *out);

/* ---- text.c: paths are bytes; JSON strings and terminals want UTF-8 ---- */

/* A copy of s (malloc'd, NULL without memory) that is valid UTF-8: valid sequences are kept, a
 * backslash becomes "\\" and every other byte "\xNN", so the bytes can be read back. */
char *pirec__remux_escape(const char *s);

/* Terminal columns of UTF-8 text (an invalid byte counts 1). */
int pirec__remux_width(const char *s);

/* s shortened to at most width columns: its end after "...", starting at a '/' where one lets it
 * fit, cut only between characters. */
void pirec__remux_fit(const char *s, int width, char *out, size_t cap);

/* Writes s and pads it with spaces to width columns. */
void pirec__remux_pad(FILE *f, const char *s, int width);

/* ---- session.c: what state the session a file belongs to was left in ---- */

enum pirec__remux_session_state {
  PIREC__REMUX_SESSION_NONE = 0, /* no session.json found: a loose file */
  PIREC__REMUX_SESSION_FINISHED, /* session.json is final: the session stopped cleanly */
  PIREC__REMUX_SESSION_LIVE,     /* not final, and its controller still runs on this host and boot */
  PIREC__REMUX_SESSION_CRASHED,  /* not final, and its controller is gone (killed, power cut) */
};

struct pirec__remux_session {
  char dir[4096]; /* the directory holding session.json */
  enum pirec__remux_session_state state;
  int pid;        /* the controller's pid as session.json names it (0: none) */
  char host[256]; /* its hostname */
  char why[512];  /* for LIVE and CRASHED: what the verdict rests on, one phrase */
};

/* Judges the session path is (a session directory) or is in (a module directory or a file in one,
 * up to two levels down): reads its session.json. A session is live while session.json is not
 * final and the controller it names runs here: same hostname, same boot (host.boot_id, when
 * recorded, against /proc/sys/kernel/random/boot_id, so a pid reused after a reboot does not pass
 * for it) and the pid exists. Returns the state (NONE when no readable session.json was found). */
enum pirec__remux_session_state pirec__remux_session_judge(const char *path,
                                                           struct pirec__remux_session *out);

/* "finished", "live", "crashed" or "" (NONE). */
const char *pirec__remux_session_state_name(enum pirec__remux_session_state s);

#endif
