/* pirec-remux: correctly timed MP4/MKV from a session's videos. Option parsing only; the work is
 * in remux/ (see include/pirec/remux.h and docs/REMUX.md). */
#include "pirec/log.h"
#include "pirec/remux.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define EXIT_USAGE 64

static void usage(FILE *f)
{
  fputs("usage: pirec-remux [options] SESSION_DIR|FILE...\n"
        "       pirec-remux --verify [options] OUTPUT...\n"
        "Writes each video (.mkv, .h264, .mjpeg) with its frames CSV or pts file as an MP4 whose\n"
        "frames are presented at their captured times. Inputs are never modified.\n"
        "  --format mp4|mkv      output container (default mp4, time base 1/90000; mkv is 1/1000)\n"
        "  --clock auto|device|mono|wall\n"
        "                        which CSV timestamp (default auto: device_ts_ns if every row has\n"
        "                        one and they increase, else mono_ns)\n"
        "  --cfr                 constant rate (N-1)/(t_last-t_first) instead of captured times\n"
        "  --write-timestamps    also write OUTPUT.timestamps.txt (mkvmerge timestamps v2)\n"
        "  --replace             delete the input video once its output verified\n"
        "  --allow-cut           accept a row/frame count mismatch without signs of a crash\n"
        "  --dry-run             check everything, write nothing\n"
        "  --verify              check existing outputs against their timing and input\n"
        "  --timing FILE         timing file (one input only)\n"
        "  --key FILE            the session is encrypted ([storage] encrypt_to): the lab's secret\n"
        "                        key file; inputs are decrypted into memory only and outputs\n"
        "                        written encrypted (not with --verify, --replace, --write-timestamps)\n"
        "  --output FILE         output file (one input only)\n"
        "  -j, --jobs N          files at once (default 1)\n"
        "  --timeout SECONDS     per file (default 30 s + 1 s per 2 MiB)\n"
        "  --json                JSON summary on stdout\n"
        "  --live                also remux a session that is still recording (left alone by\n"
        "                        default: what is written so far, as if it had crashed now)\n"
        "  --join                a trial recorded in segments (tNNN_s001, _s002, ...) becomes one\n"
        "                        output tNNN.mp4 (default: one output per segment)\n"
        "  -h, --help            this text;  --version   the version\n"
        "Exit status: 0 all done, 1 some files failed or a live session was left alone, 64 usage.\n",
        f);
}

static int parse_enum(const char *value, const char *const *names, int n)
{
  for (int i = 0; i < n; i++)
    if (strcmp(value, names[i]) == 0)
      return i;
  return -1;
}

/* Parses the options into o (and *one for the child mode). Returns 0, 1 when --help or --version
 * has answered, or EXIT_USAGE after saying why. */
static int parse_args(int argc, char **argv, struct pirec_remux_run_options *o, int *one)
{
  static const char *const formats[] = {"mp4", "mkv"};
  static const char *const clocks[] = {"auto", "device", "mono", "wall"};
  enum {
    O_FORMAT = 256,
    O_CLOCK,
    O_CFR,
    O_TS,
    O_REPLACE,
    O_CUT,
    O_DRY,
    O_VERIFY,
    O_TIMING,
    O_OUTPUT,
    O_TIMEOUT,
    O_JSON,
    O_ONE,
    O_LIVE,
    O_JOIN,
    O_KEY,
    O_VERSION
  };
  static const struct option longopts[] = {
      {"format", required_argument, NULL, O_FORMAT},
      {"clock", required_argument, NULL, O_CLOCK},
      {"cfr", no_argument, NULL, O_CFR},
      {"write-timestamps", no_argument, NULL, O_TS},
      {"replace", no_argument, NULL, O_REPLACE},
      {"allow-cut", no_argument, NULL, O_CUT},
      {"dry-run", no_argument, NULL, O_DRY},
      {"verify", no_argument, NULL, O_VERIFY},
      {"timing", required_argument, NULL, O_TIMING},
      {"output", required_argument, NULL, O_OUTPUT},
      {"jobs", required_argument, NULL, 'j'},
      {"timeout", required_argument, NULL, O_TIMEOUT},
      {"json", no_argument, NULL, O_JSON},
      {"live", no_argument, NULL, O_LIVE},
      {"join", no_argument, NULL, O_JOIN},
      {"key", required_argument, NULL, O_KEY},
      {"one", no_argument, NULL, O_ONE}, /* internal: the child mode, one file */
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, O_VERSION},
      {NULL, 0, NULL, 0},
  };
  int c, v;
  char *end;

  while ((c = getopt_long(argc, argv, "j:h", longopts, NULL)) != -1) {
    switch (c) {
    case O_FORMAT:
      if ((v = parse_enum(optarg, formats, 2)) < 0)
        goto bad_value;
      o->remux.format = v ? PIREC_REMUX_MKV : PIREC_REMUX_MP4;
      break;
    case O_CLOCK:
      if ((v = parse_enum(optarg, clocks, 4)) < 0)
        goto bad_value;
      o->remux.clock = (enum pirec_remux_clock)v;
      break;
    case O_CFR: o->remux.flags |= PIREC_REMUX_CFR; break;
    case O_TS: o->remux.flags |= PIREC_REMUX_WRITE_TIMESTAMPS; break;
    case O_REPLACE: o->remux.flags |= PIREC_REMUX_REPLACE; break;
    case O_CUT: o->remux.flags |= PIREC_REMUX_ALLOW_CUT; break;
    case O_DRY: o->remux.flags |= PIREC_REMUX_DRY_RUN; break;
    case O_VERIFY: o->verify = 1; break;
    case O_TIMING: o->remux.timing_path = optarg; break;
    case O_OUTPUT: o->remux.output_path = optarg; break;
    case O_JSON: o->json = 1; break;
    case O_LIVE: o->live = 1; break;
    case O_JOIN: o->join = 1; break;
    case O_KEY: o->remux.key_file = optarg; break;
    case O_ONE: *one = 1; break;
    case 'j':
    case O_TIMEOUT: {
      long x = strtol(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || x < 1 || x > 100000)
        goto bad_value;
      if (c == 'j')
        o->jobs = (unsigned)x;
      else
        o->timeout_s = (uint32_t)x;
      break;
    }
    case 'h': usage(stdout); return 1;
    case O_VERSION: printf("pirec-remux %s\n", PIREC_VERSION); return 1;
    default: usage(stderr); return EXIT_USAGE;
    }
  }
  return 0;

bad_value:
  fprintf(stderr, "pirec-remux: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
  return EXIT_USAGE;
}

/* The inputs after the options: at least one, and exactly one for --timing, --output or --one. */
static int check_inputs(int argc, const struct pirec_remux_run_options *o, int one)
{
  if (optind >= argc) {
    fputs("pirec-remux: no session directory or file given\n", stderr);
    usage(stderr);
    return EXIT_USAGE;
  }
  if ((o->remux.timing_path || o->remux.output_path) && argc - optind != 1) {
    fputs("pirec-remux: --timing and --output take exactly one input file\n", stderr);
    return EXIT_USAGE;
  }
  if (one && argc - optind != 1) {
    fputs("pirec-remux: --one takes one file\n", stderr);
    return EXIT_USAGE;
  }
  if (o->join && (o->remux.key_file || (o->remux.flags & PIREC_REMUX_REPLACE))) {
    fputs("pirec-remux: --join does not go with --key or --replace\n", stderr);
    return EXIT_USAGE;
  }
  if (o->remux.key_file &&
      (o->verify || (o->remux.flags & (PIREC_REMUX_REPLACE | PIREC_REMUX_WRITE_TIMESTAMPS)))) {
    fputs("pirec-remux: --key does not go with --verify, --replace or --write-timestamps\n", stderr);
    return EXIT_USAGE;
  }
  return 0;
}

/* The parent: each input in a child that is this same binary in --one mode. */
static int run_children(int argc, char **argv, struct pirec_remux_run_options *o)
{
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    perror("pirec-remux: cannot find its own executable");
    return 1;
  }
  self[n] = '\0';
  o->self_exe = self;
  /* Each file's fate is in the summary; the job layer's per-child warnings would repeat it. */
  pirec_log_set_level(PIREC_LOG_ERROR);
  o->progress = !o->json && isatty(STDERR_FILENO);
  uv_loop_t loop;
  if (uv_loop_init(&loop) < 0)
    return 1;
  int rc = pirec_remux_run(&loop, (const char *const *)argv + optind, argc - optind, o, stdout, stderr);
  if (uv_loop_close(&loop) != 0)
    fputs("pirec-remux: loop still had handles at exit\n", stderr);
  return rc;
}

int main(int argc, char **argv)
{
  struct pirec_remux_run_options o;
  int one = 0;

  memset(&o, 0, sizeof o);
  o.jobs = 1;
  int rc = parse_args(argc, argv, &o, &one);
  if (rc == 0)
    rc = check_inputs(argc, &o, one);
  if (rc != 0)
    return rc == 1 ? 0 : rc;
  if (one)
    return pirec_remux_child(argv[optind], &o.remux, o.verify, stdout);
  return run_children(argc, argv, &o);
}
