/* The one schema: every section, key, type, default, range and line of help. Parsing, validation,
 * defaults, the example file and docs/CONFIG.md are all derived from these tables. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pirec/crypt.h"

#define NS_US    INT64_C(1000)
#define NS_MS    INT64_C(1000000)
#define NS_S     INT64_C(1000000000)
#define NS_MIN   (60 * NS_S)
#define NS_H     (3600 * NS_S)
#define KIB      INT64_C(1024)
#define MIB      (1024 * KIB)
#define GIB      (1024 * MIB)

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- custom checks for string-typed values ---------------------------------------------------- */

static bool name_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static const char *check_label(const char *v)
{
  for (const char *c = v; *c; c++)
    if (!name_char(*c))
      return "letters, digits, '-' and '_' only (it becomes part of a directory name)";
  if (strlen(v) > 64)
    return "at most 64 characters";
  return NULL;
}

/* A list of module names ("cam0, eyetracker, gpio.pedal"): camera instance names, eyetracker,
 * notes, gpio.NAME. */
static const char *check_module_list(const char *v)
{
  for (const char *c = v; *c; c++)
    if (!name_char(*c) && *c != ',' && *c != ' ' && *c != '.')
      return "module names (a camera's name, eyetracker, notes, gpio.NAME) separated by commas";
  return NULL;
}

static const char *check_socket_path(const char *v)
{
  if (*v && *v != '/')
    return "an absolute path, or empty for the default";
  if (strlen(v) > 107)
    return "at most 107 characters (the limit of a unix socket address)";
  return NULL;
}

static const char *check_public_key(const char *v)
{
  unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES];
  if (*v && pirec_crypt_public_parse(v, pk) != 0)
    return "the lab's public key as `pirec keys new` prints it (base64 of 32 bytes), or empty for none";
  return NULL;
}

static const char *check_wxh(const char *v)
{
  int w, h;
  if (pirec_config_parse_wxh(v, &w, &h) != 0)
    return "WIDTHxHEIGHT with each from 16 to 8192 and even, e.g. 640x480";
  return NULL;
}

static const char *check_pixfmt(const char *v)
{
  if (!*v)
    return "a pixel format name such as yuv420p, yuyv422 or mjpeg";
  for (const char *c = v; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
      return "a pixel format name such as yuv420p, yuyv422 or mjpeg (lowercase letters, digits, '_')";
  return NULL;
}

static const char *check_address(const char *v)
{
  static const char expected[] = "auto, or HOST:PORT with a port from 1 to 65535, e.g. 192.168.75.51:8080";
  if (strcmp(v, "auto") == 0)
    return NULL;
  const char *colon = strrchr(v, ':');
  if (!colon || colon == v)
    return expected;
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || port < 1 || port > 65535)
    return expected;
  for (const char *c = v; c < colon; c++)
    if (*c == ' ' || *c == '\t')
      return expected;
  return NULL;
}

static const char *check_gpio_line(const char *v)
{
  if (!*v)
    return "a line name such as GPIO17, or a line offset such as 17";
  for (const char *c = v; *c; c++)
    if (*c == ' ' || *c == '\t')
      return "a line name such as GPIO17, or a line offset such as 17 (no spaces)";
  return NULL;
}

static const char *check_nonempty(const char *v)
{
  return *v ? NULL : "a non-empty value";
}

static const char *check_url(const char *v)
{
  if (!*v)
    return NULL; /* empty is checked against source in validate_camera */
  if (!strstr(v, "://"))
    return "a URL such as rtsp://192.168.1.10:554/stream";
  return NULL;
}

/* ---- enums ------------------------------------------------------------------------------------- */

static const char *const sources[] = {"lavfi", "v4l2", "rpicam", "url", NULL};
static const char *const presets[] = {"ultrafast", "superfast", "veryfast", "faster",   "fast",
                                      "medium",    "slow",      "slower",   "veryslow", NULL};
static const char *const edges[] = {"rising", "falling", "both", NULL};
static const char *const biases[] = {"as-is", "disabled", "pull-up", "pull-down", NULL};
static const char *const actions[] = {"start", "stop", "toggle", "trial", "marker", NULL};
static const char *const directions[] = {"input", "output", NULL};
static const char *const roles[] = {"led", "sync_pulse", NULL};
static const char *const formats[] = {"mp4", "mkv", NULL};
static const char *const clocks[] = {"auto", "mono", "wall", "device", NULL};
static const char *const control_modes[] = {"socket", "off", NULL};
static const char *const required_policies[] = {"fail", "warn", NULL};
static const char *const low_space_policies[] = {"refuse", "warn", NULL};
static const char *const refusal_policies[] = {"continue", "block", NULL};

/* Which happenings become events on the eye tracker (docs/EYETRACKER.md, "Driving the device"). */
static const char *check_event_kinds(const char *v)
{
  static const char *const kinds[] = {"session", "trial", "note", "gpio"};
  const char *p = v;
  while (*p) {
    p += strspn(p, " ,");
    size_t n = strcspn(p, " ,");
    int ok = n == 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0] && !ok; i++)
      ok = n == strlen(kinds[i]) && strncmp(p, kinds[i], n) == 0;
    if (!ok)
      return "a comma-separated list of session, trial, note, gpio";
    p += n;
  }
  return NULL;
}

/* An event name prefix: printable ASCII, short. */
static const char *check_event_prefix(const char *v)
{
  for (const char *c = v; *c; c++)
    if (*c < 0x20 || *c > 0x7e)
      return "printable ASCII only";
  return strlen(v) > 32 ? "at most 32 characters" : NULL;
}

/* ---- the tables -------------------------------------------------------------------------------- */

#define BOOL(n, d, h)                                          \
  {                                                            \
    .name = n, .type = PIREC__CONFIG_BOOL, .def = d, .help = h \
  }
#define INT(n, d, lo, hi, h)                                                                    \
  {                                                                                             \
    .name = n, .type = PIREC__CONFIG_INT, .def = d, .min = lo, .max = hi, .help = h, .base = 10 \
  }
#define MODE(n, d, h)                                                                           \
  {                                                                                             \
    .name = n, .type = PIREC__CONFIG_INT, .def = d, .min = 0, .max = 0777, .help = h, .base = 8 \
  }
#define DUR(n, d, lo, hi, h)                                                             \
  {                                                                                      \
    .name = n, .type = PIREC__CONFIG_DURATION, .def = d, .min = lo, .max = hi, .help = h \
  }
#define SIZE(n, d, lo, hi, h)                                                        \
  {                                                                                  \
    .name = n, .type = PIREC__CONFIG_SIZE, .def = d, .min = lo, .max = hi, .help = h \
  }
#define STR(n, d, c, h)                                                      \
  {                                                                          \
    .name = n, .type = PIREC__CONFIG_STRING, .def = d, .check = c, .help = h \
  }
#define REQ(n, ex, c, h)                                                          \
  {                                                                               \
    .name = n, .type = PIREC__CONFIG_STRING, .example = ex, .check = c, .help = h \
  }
#define ENUM(n, d, ch, h)                                                     \
  {                                                                           \
    .name = n, .type = PIREC__CONFIG_ENUM, .def = d, .choices = ch, .help = h \
  }
#define PATH(n, d, h)                                                                   \
  {                                                                                     \
    .name = n, .type = PIREC__CONFIG_PATH, .def = d, .check = check_nonempty, .help = h \
  }

static const struct pirec__config_key session_keys[] = {
    PATH("output_dir", "/var/lib/pirec/sessions",
         "directory in which each session gets its own YYYYMMDDTHHMMSSZ[_LABEL] directory"),
    STR("label", "", check_label, "default label appended to session directory names (empty: none)"),
    DUR("clocks_interval", "10s", 100 * NS_MS, NS_H,
        "how often a (monotonic, realtime, boottime) row is written to clocks.csv"),
    BOOL("remux_after", "true", "run pirec-remux on the session directory when the session stops"),
    STR("required", "", check_module_list,
        "modules that must record, e.g. cam0, eyetracker, gpio.pedal: a start while one of them cannot "
        "record (device or chip missing, recorder down) fails, or warns (see if_required_missing)"),
    ENUM("if_required_missing", "fail", required_policies,
         "fail: the start fails and the session is stopped at once; warn: it records without them"),
};

static const struct pirec__config_key storage_keys[] = {
    SIZE("ring_size", "8MiB", 64 * KIB, GIB, "ring buffer per non-video module (gaze, notes, GPIO events)"),
    DUR("fsync_interval", "1s", 0, 10 * NS_MIN,
        "how often written files are fdatasync'ed (0: only when closed)"),
    SIZE("reserve", "64MiB", 0, 1024 * GIB,
         "free space kept on output_dir's file system: a session is stopped cleanly before free space "
         "falls below it (0: no low-space stop)"),
    DUR("min_free_time", "10min", 0, 24 * NS_H,
        "a start needs room for this much recording at the estimated data rate, plus reserve (0: no "
        "check at start)"),
    ENUM("if_low_space", "refuse", low_space_policies,
         "refuse: a start without room for min_free_time is refused; warn: it records and says so"),
    DUR("space_check_interval", "1s", 100 * NS_MS, NS_MIN,
        "how often free space on output_dir's file system is checked (statvfs, off the loop)"),
    STR("encrypt_to", "", check_public_key,
        "the lab's public key (pirec keys new): every session file is encrypted as it is written, "
        "under a session key sealed to it in session.key; only the lab's secret key reads them "
        "(docs/PRIVACY.md). Empty: files in clear"),
};

static const struct pirec__config_key control_keys[] = {
    ENUM("mode", "socket", control_modes,
         "socket: accept status/start/stop/trial/note on a unix socket; off: none"),
    STR("socket", "", check_socket_path,
        "path of the control socket; empty: $RUNTIME_DIRECTORY/control.sock (systemd), else "
        "$XDG_RUNTIME_DIR/pirec/control.sock, else /run/pirec/control.sock for root, else "
        "/tmp/pirec-UID/control.sock"),
    MODE("socket_mode", "0660", "permissions of the control socket"),
};

static const struct pirec__config_key camera_keys[] = {
    BOOL("enabled", "true", "record this camera"),
    ENUM("source", "lavfi", sources,
         "lavfi: synthetic test pattern; v4l2: USB/V4L2 device; rpicam: CSI camera via rpicam-vid; url: "
         "network stream"),
    PATH("device", "/dev/video0", "V4L2 device node (source = v4l2)"),
    STR("url", "", check_url, "stream URL (source = url), e.g. rtsp://192.168.1.10:554/stream"),
    STR("lavfi", "testsrc2", check_nonempty, "lavfi source filter (source = lavfi); size and fps are added"),
    STR("size", "640x480", check_wxh, "frame size WIDTHxHEIGHT"),
    INT("fps", "30", 1, 240, "frames per second requested from the source"),
    STR("pixel_format", "yuv420p", check_pixfmt,
        "pixel format requested from the source (mjpeg for most USB cameras)"),
    INT("index", "0", 0, 15, "which CSI camera rpicam-vid opens, its --camera number (source = rpicam)"),
    ENUM("preset", "ultrafast", presets,
         "x264 speed preset for raw sources (yuv420p, yuv422p); compressed sources (mjpeg, h264) are stored "
         "as received"),
    INT("crf", "23", 0, 51, "x264 constant rate factor for raw sources, lower is better quality"),
    INT("gop", "60", 1, 10000, "frames between keyframes for raw sources"),
    SIZE("ring_size", "0", 0, 2 * GIB,
         "ring buffer between capture and the encoder or writer (0: one second of frames, at most 256MiB)"),
    DUR("pre_trigger", "0", 0, 60 * NS_S,
        "sources sending mjpeg or h264: while no trial runs, keep this much video (from a keyframe) in "
        "memory "
        "and write it first into the next trial, rows marked before_start (0: only the current GOP; raw "
        "sources: not applied)"),
    DUR("segment", "0", 0, 24 * NS_H,
        "split a trial's video into numbered files tNNN_sMMM (each with its frames CSV) after this much "
        "video, at the next frame that starts a GOP (0: one file per trial)"),
    SIZE("segment_size", "0", 0, 1024 * GIB,
         "split a trial's video into numbered files when one reaches this size, at the next frame that "
         "starts a GOP (0: no size limit); with segment, whichever comes first"),
};

static const char *const audio_formats[] = {"s16", "s32", "f32", NULL};

static const struct pirec__config_key audio_keys[] = {
    BOOL("enabled", "true", "record this audio device"),
    STR("device", "default", check_nonempty,
        "ALSA capture PCM: default, hw:CARD,DEV, plughw:CARD=NAME, or a PCM defined in asound.conf"),
    INT("rate", "48000", 8000, 384000, "frames per second, taken exactly (never resampled silently)"),
    INT("channels", "1", 1, 32, "channels captured"),
    ENUM("format", "s16", audio_formats, "sample format in the WAV file: s16, s32 or f32 (IEEE float)"),
    DUR("period", "20ms", NS_MS, NS_S,
        "one block: the ALSA period read at once and one row of the blocks CSV"),
    SIZE("ring_size", "0", 0, 1 * GIB,
         "ring buffer between capture and the WAV file (0: two seconds, at least 1MiB)"),
};

static const struct pirec__config_key eyetracker_keys[] = {
    BOOL("enabled", "false", "record gaze and scene video from the eye tracker"),
    STR("address", "auto", check_address, "HOST:PORT of the glasses' API, or auto to discover them"),
    INT("rtsp_port", "8086", 1, 65535, "RTSP port of the realtime API (gaze, world, eye_events)"),
    DUR("reconnect_min", "1s", 10 * NS_MS, NS_H, "first delay before reconnecting after a disconnect"),
    DUR("reconnect_max", "30s", 10 * NS_MS, NS_H, "the delay doubles up to this limit"),
    DUR("pre_trigger", "0", 0, 60 * NS_S,
        "while no trial runs, keep this much of gaze, eye events and scene video (from a keyframe) in "
        "memory and write it first into the next trial, rows marked before_start (0: only the scene's "
        "current GOP)"),
    DUR("segment", "0", 0, 24 * NS_H,
        "split a trial's scene video into numbered files tNNN_scene_sMMM (each with its frames CSV) after "
        "this much video, at the next keyframe (0: one file per trial; gaze stays one file)"),
    SIZE("segment_size", "0", 0, 1024 * GIB,
         "split a trial's scene video into numbered files when one reaches this size, at the next "
         "keyframe (0: no size limit); with segment, whichever comes first"),
    BOOL("device_events", "true",
         "send session, trial, note and GPIO events to the device (POST /api/event), timestamped on its "
         "clock, so its own recording and Pupil Cloud carry pirec's markers"),
    STR("device_event_kinds", "session, trial, note, gpio", check_event_kinds,
        "which happenings are sent as device events: session, trial, note, gpio"),
    STR("device_event_prefix", "pirec.", check_event_prefix, "prefix of every device event's name"),
    BOOL("device_recording", "false",
         "a session start also starts the device's own recording, its stop saves it (id in "
         "session.json and events.csv)"),
    ENUM("if_device_refuses", "continue", refusal_policies,
         "when the device refuses to start its recording: continue records without it (said in events.csv); "
         "block: the eye tracker refuses the start (with [session] required = eyetracker no session runs)"),
    DUR("time_echo_interval", "10s", NS_S, NS_H,
        "how often the device clock's offset is estimated with the Time Echo protocol (also at every "
        "session start)"),
};

static const struct pirec__config_key notes_keys[] = {
    BOOL("enabled", "true", "accept operator notes (control socket, stdin) into notes.csv"),
    INT("max_length", "4096", 1, 65536, "longest note in bytes; longer notes are refused"),
};

static const struct pirec__config_key gpio_keys[] = {
    STR("chip", "auto", check_nonempty,
        "chip path (/dev/gpiochip0), name (gpiochip0) or label (pinctrl-rp1); auto: search all chips for "
        "line"),
    REQ("line", "GPIO17", check_gpio_line, "line name (GPIO17) or offset on the chip; required"),
    ENUM("direction", "input", directions, "input: a trigger that records edges; output: driven by pirec"),
    ENUM("edge", "rising", edges, "edges that trigger (direction = input)"),
    ENUM("bias", "as-is", biases, "pull resistor (direction = input)"),
    BOOL("active_low", "false", "the line is active when low"),
    DUR("debounce", "5ms", 0, NS_S,
        "a new level counts only once it has held this long; shorter glitches are dropped (0: off)"),
    ENUM("action", "marker", actions,
         "what an edge does: start/stop/toggle the session, start the next trial, or only log a marker"),
    DUR("min_interval", "0", 0, NS_H, "ignore triggers closer than this to the last accepted one"),
    ENUM("role", "led", roles,
         "led: lit while recording; sync_pulse: periodic pulse logged in events.csv (direction = output)"),
    DUR("pulse_length", "10ms", NS_US, 10 * NS_S, "length of a sync pulse (role = sync_pulse)"),
    DUR("pulse_interval", "1s", 0, NS_H,
        "time between sync pulses while recording (role = sync_pulse; 0: one pulse per trial start only)"),
};

static const struct pirec__config_key remux_keys[] = {
    ENUM("format", "mp4", formats, "container written by pirec-remux"),
    INT("jobs", "1", 1, 8, "remux jobs run at the same time"),
    ENUM("clock", "auto", clocks,
         "timestamp column that times each frame: auto (device when every row has one, else mono), mono "
         "(CLOCK_MONOTONIC), wall (CLOCK_REALTIME) or device"),
};

static const char *check_listen(const char *v)
{
  if (!*v || strspn(v, "0123456789abcdefABCDEF.:") != strlen(v))
    return "a numeric IPv4 or IPv6 address: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every network)";
  return NULL;
}

static const char *check_abs_or_empty(const char *v)
{
  return *v && *v != '/' ? "an absolute path, or empty" : NULL;
}

/* The shape of libsodium's crypto_pwhash_str output (pirec-web --hash-password); the hash itself is
 * checked by libsodium at each login. */
static const char *check_password_hash(const char *v)
{
  if (*v && (strncmp(v, "$argon2id$", 10) != 0 || strlen(v) >= 128))
    return "empty, or an Argon2id hash as `pirec-web --hash-password` prints it ($argon2id$v=19$...)";
  return NULL;
}

static const struct pirec__config_key web_keys[] = {
    STR("listen", "127.0.0.1", check_listen,
        "address pirec-web listens on; anything but 127.0.0.1 or ::1 (the LAN) needs the token"),
    INT("port", "8380", 1, 65535, "TCP port of pirec-web"),
    STR("token_file", "/var/lib/pirec-web/token", check_abs_or_empty,
        "the access token (mode 0600, made on first use); required when listening beyond this machine"),
    BOOL("require_token", "false", "ask for the token on 127.0.0.1 too (always on for other addresses)"),
    STR("password_hash", "", check_password_hash,
        "the console's password, as `pirec-web --hash-password` prints its hash: the page asks for it "
        "(the token works too)"),
    INT("max_clients", "32", 1, 1000, "browser (WebSocket) clients at once; more are refused"),
    STR("tls_cert", "", check_abs_or_empty, "PEM certificate: pirec-web serves HTTPS (with tls_key)"),
    STR("tls_key", "", check_abs_or_empty, "PEM private key of tls_cert"),
};

static const char *check_broker(const char *v)
{
  if (!*v)
    return NULL;
  if (strncmp(v, "mqtt://", 7) && strncmp(v, "mqtts://", 8))
    return "mqtt://HOST[:PORT] or mqtts://HOST[:PORT], or empty (no fleet)";
  const char *h = v + (v[4] == 's' ? 8 : 7);
  if (!*h || *h == ':' || *h == '/' || strchr(h, '/') || strchr(h, '@'))
    return "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]: a host, no path and no user (credentials_file)";
  return NULL;
}

/* MQTT topic levels: no '/', '+', '#' or spaces (controller/fleet.h). */
static const char *check_fleet_name(const char *v)
{
  size_t n = strlen(v);
  if (n > 64 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
    return "at most 64 of A-Z a-z 0-9 _ . -";
  return NULL;
}

static const char *check_fleet_group(const char *v)
{
  return *v ? check_fleet_name(v) : "1 to 64 of A-Z a-z 0-9 _ . -";
}

static const char *const clock_error_policies[] = {"warn", "refuse", NULL};

static const struct pirec__config_key fleet_keys[] = {
    STR("broker", "", check_broker,
        "MQTT broker of the fleet: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883, TLS); empty: "
        "this pirec is on its own"),
    STR("group", "lab", check_fleet_group, "the fleet: every pirec with the same group takes its commands"),
    STR("device", "", check_fleet_name, "this pirec's name in the group (empty: the host name)"),
    STR("credentials_file", "", check_abs_or_empty,
        "file holding one line USER:PASSWORD for the broker (mode 0600; empty: anonymous)"),
    STR("ca_file", "", check_abs_or_empty,
        "PEM CA certificate that signed the broker's certificate (mqtts; empty: the system's CAs)"),
    DUR("keepalive", "10s", 5 * NS_S, 10 * NS_MIN, "MQTT keepalive: how soon a dead link is noticed"),
    DUR("reconnect_max", "5s", 500 * NS_MS, 5 * NS_MIN, "longest wait between reconnection attempts"),
    DUR("start_lead", "2s", 100 * NS_MS, NS_MIN,
        "pirec fleet start: how far in the future the agreed start instant lies (longer than the "
        "network's delay)"),
    DUR("max_clock_error", "0", 0, NS_MIN,
        "a fleet start on a device whose clock is unsynchronised or whose estimated error (adjtimex) is "
        "larger warns or is refused (if_clock_error); 0: not checked"),
    ENUM("if_clock_error", "warn", clock_error_policies, "warn: start and log it; refuse: do not start"),
};

static void validate_camera(struct pirec__config_parse *p, struct pirec__config_section *s);
static void validate_eyetracker(struct pirec__config_parse *p, struct pirec__config_section *s);
static void validate_gpio(struct pirec__config_parse *p, struct pirec__config_section *s);

const struct pirec__config_kind pirec__config_kinds[] = {
    {"session", false, "where and how sessions and trials are written", session_keys, COUNT(session_keys),
     NULL},
    {"storage", false, "buffering and disk writes", storage_keys, COUNT(storage_keys), NULL},
    {"control", false, "the control socket used by pirec status/start/stop/trial/note", control_keys,
     COUNT(control_keys), NULL},
    {"camera", true, "one section per camera; NAME names its folder in the session directory", camera_keys,
     COUNT(camera_keys), validate_camera},
    {"audio", true,
     "one section per ALSA capture device (docs/AUDIO.md); NAME names its folder in the session "
     "directory",
     audio_keys, COUNT(audio_keys), NULL},
    {"eyetracker", false, "a network eye tracker (gaze samples and scene video)", eyetracker_keys,
     COUNT(eyetracker_keys), validate_eyetracker},
    {"notes", false, "operator notes", notes_keys, COUNT(notes_keys), NULL},
    {"gpio", true, "one section per GPIO line, a trigger (input) or a signal (output)", gpio_keys,
     COUNT(gpio_keys), validate_gpio},
    {"remux", false, "turning captured video into correctly timed files after the session", remux_keys,
     COUNT(remux_keys), NULL},
    {"web", false, "pirec-web, the console in a browser and its HTTP API (docs/HTTP.md)", web_keys,
     COUNT(web_keys), NULL},
    {"fleet", false, "several pirecs, one session: commands and status over MQTT (docs/FLEET.md)", fleet_keys,
     COUNT(fleet_keys), NULL},
};
const size_t pirec__config_kind_count = COUNT(pirec__config_kinds);

/* ---- cross-key validation ---------------------------------------------------------------------- */

/* Validators name keys of their own kind; an empty value stands in should one be renamed without
 * them (test-config runs every validator, so that is caught before a release). */
static const struct pirec__config_value *value_of(const struct pirec__config_section *s, const char *key)
{
  static const struct pirec__config_value empty = {.s = ""};
  size_t i;
  if (!pirec__config_key_find(s->kind, key, &i))
    return &empty;
  return &s->values[i];
}

static int line_of(const struct pirec__config_section *s, const char *key)
{
  const struct pirec__config_value *v = value_of(s, key);
  return v->set ? v->line : s->line;
}

static void validate_camera(struct pirec__config_parse *p, struct pirec__config_section *s)
{
  const char *source = value_of(s, "source")->s;
  char key[128];
  if (strcmp(source, "url") == 0 && !*value_of(s, "url")->s && !value_of(s, "url")->refused) {
    snprintf(key, sizeof(key), "%s.url", s->name);
    pirec__config_error(p, line_of(s, "url"), key, NULL,
                        "missing, expected a stream URL because source = url");
  }
}

static void validate_eyetracker(struct pirec__config_parse *p, struct pirec__config_section *s)
{
  int64_t lo = value_of(s, "reconnect_min")->v.i, hi = value_of(s, "reconnect_max")->v.i;
  if (lo > hi) {
    char a[32], b[32], key[128];
    pirec__config_format_duration(lo, a, sizeof(a));
    pirec__config_format_duration(hi, b, sizeof(b));
    snprintf(key, sizeof(key), "%s.reconnect_max", s->name);
    pirec__config_error(p, line_of(s, "reconnect_max"), key, b, "expected at least reconnect_min (%s)", a);
  }
}

static void validate_gpio(struct pirec__config_parse *p, struct pirec__config_section *s)
{
  char key[128];
  const struct pirec__config_value *line = value_of(s, "line");
  if (!line->set) {
    if (line->refused)
      return;
    snprintf(key, sizeof(key), "%s.line", s->name);
    pirec__config_error(p, s->line, key, NULL,
                        "missing, expected a line name such as GPIO17 or an offset such as 17");
    return;
  }
  /* Two sections claiming the same line would fight over one kernel request. */
  const char *chip = value_of(s, "chip")->s;
  for (size_t i = 0; i < p->cfg->section_count; i++) {
    const struct pirec__config_section *o = &p->cfg->sections[i];
    if (o == s)
      break;
    if (o->kind != s->kind)
      continue;
    const struct pirec__config_value *ol = value_of(o, "line");
    if (ol->set && strcmp(ol->s, line->s) == 0 && strcmp(value_of(o, "chip")->s, chip) == 0) {
      snprintf(key, sizeof(key), "%s.line", s->name);
      pirec__config_error(p, line->line, key, line->s, "line already used by [%s] on line %d", o->name,
                          ol->line);
      return;
    }
  }
}

/* ---- lookups and suggestions ------------------------------------------------------------------- */

const struct pirec__config_kind *pirec__config_kind_find(const char *name, size_t len)
{
  for (size_t i = 0; i < pirec__config_kind_count; i++)
    if (strlen(pirec__config_kinds[i].name) == len && memcmp(pirec__config_kinds[i].name, name, len) == 0)
      return &pirec__config_kinds[i];
  return NULL;
}

const struct pirec__config_key *pirec__config_key_find(const struct pirec__config_kind *kind,
                                                       const char *name, size_t *index)
{
  for (size_t i = 0; i < kind->key_count; i++)
    if (strcmp(kind->keys[i].name, name) == 0) {
      if (index)
        *index = i;
      return &kind->keys[i];
    }
  return NULL;
}

const struct pirec__config_kind *pirec__config_section_kind(const char *section, bool *bad_name)
{
  *bad_name = false;
  const char *dot = strchr(section, '.');
  size_t len = dot ? (size_t)(dot - section) : strlen(section);
  const struct pirec__config_kind *kind = pirec__config_kind_find(section, len);
  if (!kind)
    return NULL;
  if (kind->instance) {
    if (!dot || !dot[1]) {
      *bad_name = true;
      return kind;
    }
    for (const char *c = dot + 1; *c; c++)
      if (!name_char(*c)) {
        *bad_name = true;
        break;
      }
  } else if (dot) {
    *bad_name = true;
  }
  return kind;
}

int pirec__config_split_key(const char *dotted, char *section, size_t section_len, const char **key)
{
  const char *dot = strrchr(dotted, '.');
  if (!dot || dot == dotted || !dot[1] || (size_t)(dot - dotted) >= section_len)
    return -ENOENT;
  memcpy(section, dotted, (size_t)(dot - dotted));
  section[dot - dotted] = '\0';
  *key = dot + 1;
  return 0;
}

/* Optimal string alignment distance: insertions, deletions, substitutions and adjacent
 * transpositions ("fsp" -> "fps" is one edit), the typical typos in a key. */
static size_t edit_distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63)
    return (size_t)-1;
  size_t d[64][64];
  for (size_t i = 0; i <= la; i++)
    d[i][0] = i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < best)
        best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best)
        best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[la][lb];
}

const char *pirec__config_suggest(const char *word, const char *const *candidates, size_t count)
{
  size_t len = strlen(word);
  size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
  const char *best = NULL;
  size_t best_d = limit + 1;
  for (size_t i = 0; i < count; i++) {
    size_t d = edit_distance(word, candidates[i]);
    if (d < best_d) {
      best_d = d;
      best = candidates[i];
    }
  }
  return best;
}

const char *pirec__config_suggest_kind(const char *section)
{
  const char *names[16];
  for (size_t i = 0; i < pirec__config_kind_count; i++)
    names[i] = pirec__config_kinds[i].name;
  char head[128];
  snprintf(head, sizeof(head), "%s", section);
  char *dot = strchr(head, '.');
  if (dot)
    *dot = '\0';
  return pirec__config_suggest(head, names, pirec__config_kind_count);
}

const char *pirec__config_suggest_key(const struct pirec__config_kind *kind, const char *word)
{
  const char *names[32];
  size_t n = kind->key_count < 32 ? kind->key_count : 32;
  for (size_t i = 0; i < n; i++)
    names[i] = kind->keys[i].name;
  return pirec__config_suggest(word, names, n);
}

/* ---- value parsing ----------------------------------------------------------------------------- */

/* Parses "12", "1.5", "0.25" followed by a unit from units[] (multipliers in mult[]); the result must
 * be a whole number of base units. unit_required: a bare number other than 0 is refused. */
static int parse_scaled(const char *text, const char *const *units, const int64_t *mult, bool unit_required,
                        uint64_t *out)
{
  const char *c = text;
  uint64_t whole = 0, frac = 0, frac_scale = 1;
  bool digits = false;
  while (*c >= '0' && *c <= '9') {
    if (__builtin_mul_overflow(whole, 10, &whole) ||
        __builtin_add_overflow(whole, (uint64_t)(*c - '0'), &whole))
      return -ERANGE;
    digits = true;
    c++;
  }
  if (*c == '.') {
    c++;
    bool fdigits = false;
    while (*c >= '0' && *c <= '9') {
      if (frac_scale >= UINT64_C(1000000000000000000))
        return -EINVAL;
      frac = frac * 10 + (uint64_t)(*c - '0');
      frac_scale *= 10;
      fdigits = true;
      c++;
    }
    if (!fdigits)
      return -EINVAL;
  }
  if (!digits)
    return -EINVAL;
  while (*c == ' ')
    c++;
  uint64_t m = 0;
  if (!*c) {
    if (unit_required && (whole != 0 || frac != 0))
      return -EINVAL;
    m = 1;
  } else {
    for (size_t i = 0; units[i]; i++)
      if (strcmp(c, units[i]) == 0) {
        m = (uint64_t)mult[i];
        break;
      }
    if (!m)
      return -EINVAL;
  }
  uint64_t v;
  if (__builtin_mul_overflow(whole, m, &v))
    return -ERANGE;
  if (frac) {
    /* frac/frac_scale * m must be whole: frac * m can overflow for long fractions; divide first
     * when it divides exactly. */
    uint64_t fm;
    if (__builtin_mul_overflow(frac, m, &fm))
      return -ERANGE;
    if (fm % frac_scale)
      return -EINVAL;
    if (__builtin_add_overflow(v, fm / frac_scale, &v))
      return -ERANGE;
  }
  *out = v;
  return 0;
}

static const char *const duration_units[] = {"ns", "us", "ms", "s", "min", "h", NULL};
static const int64_t duration_mult[] = {1, NS_US, NS_MS, NS_S, NS_MIN, NS_H};
static const char *const size_units[] = {"B", "KiB", "MiB", "GiB", "kB", "MB", "GB", NULL};
static const int64_t size_mult[] = {1, KIB, MIB, GIB, 1000, 1000000, 1000000000};

int pirec_config_parse_duration(const char *text, int64_t *ns)
{
  uint64_t v;
  int r = parse_scaled(text, duration_units, duration_mult, true, &v);
  if (r)
    return r;
  if (v > (uint64_t)INT64_MAX)
    return -ERANGE;
  *ns = (int64_t)v;
  return 0;
}

int pirec_config_parse_size(const char *text, uint64_t *bytes)
{
  return parse_scaled(text, size_units, size_mult, false, bytes);
}

int pirec_config_parse_wxh(const char *text, int *width, int *height)
{
  char *end;
  if (!(*text >= '0' && *text <= '9'))
    return -EINVAL;
  errno = 0;
  long w = strtol(text, &end, 10);
  if (errno || *end != 'x' || !(end[1] >= '0' && end[1] <= '9'))
    return -EINVAL;
  long h = strtol(end + 1, &end, 10);
  if (errno || *end)
    return -EINVAL;
  if (w < 16 || w > 8192 || h < 16 || h > 8192 || (w & 1) || (h & 1))
    return -EINVAL;
  *width = (int)w;
  *height = (int)h;
  return 0;
}

void pirec__config_format_duration(int64_t ns, char *buf, size_t len)
{
  static const struct {
    const char *unit;
    int64_t mult;
  } u[] = {{"h", NS_H}, {"min", NS_MIN}, {"s", NS_S}, {"ms", NS_MS}, {"us", NS_US}};
  if (ns == 0) {
    snprintf(buf, len, "0");
    return;
  }
  for (size_t i = 0; i < COUNT(u); i++)
    if (ns % u[i].mult == 0) {
      snprintf(buf, len, "%lld%s", (long long)(ns / u[i].mult), u[i].unit);
      return;
    }
  snprintf(buf, len, "%lldns", (long long)ns);
}

void pirec__config_format_size(uint64_t bytes, char *buf, size_t len)
{
  static const struct {
    const char *unit;
    uint64_t mult;
  } u[] = {{"GiB", GIB}, {"MiB", MIB}, {"KiB", KIB}, {"GB", 1000000000}, {"MB", 1000000}, {"kB", 1000}};
  if (bytes != 0)
    for (size_t i = 0; i < COUNT(u); i++)
      if (bytes % u[i].mult == 0) {
        snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / u[i].mult), u[i].unit);
        return;
      }
  snprintf(buf, len, "%lluB", (unsigned long long)bytes);
}

static _Thread_local char expected_buf[512];

const char *pirec__config_expected(const struct pirec__config_key *key)
{
  char lo[32], hi[32];
  switch (key->type) {
  case PIREC__CONFIG_BOOL: return "expected true or false (also yes/no, on/off, 1/0)";
  case PIREC__CONFIG_INT:
    if (key->base == 8)
      snprintf(expected_buf, sizeof(expected_buf), "expected an octal file mode from 0000 to 0777");
    else
      snprintf(expected_buf, sizeof(expected_buf), "expected an integer from %lld to %lld",
               (long long)key->min, (long long)key->max);
    return expected_buf;
  case PIREC__CONFIG_DURATION:
    pirec__config_format_duration(key->min, lo, sizeof(lo));
    pirec__config_format_duration(key->max, hi, sizeof(hi));
    snprintf(expected_buf, sizeof(expected_buf),
             "expected a duration from %s to %s with a unit (ns, us, ms, s, min, h), e.g. 500ms", lo, hi);
    return expected_buf;
  case PIREC__CONFIG_SIZE:
    pirec__config_format_size((uint64_t)key->min, lo, sizeof(lo));
    pirec__config_format_size((uint64_t)key->max, hi, sizeof(hi));
    snprintf(expected_buf, sizeof(expected_buf),
             "expected a size from %s to %s (units B, KiB, MiB, GiB, kB, MB, GB), e.g. 64MiB", lo, hi);
    return expected_buf;
  case PIREC__CONFIG_ENUM: {
    size_t n = (size_t)snprintf(expected_buf, sizeof(expected_buf), "expected one of");
    for (size_t i = 0; key->choices[i] && n < sizeof(expected_buf); i++)
      n += (size_t)snprintf(expected_buf + n, sizeof(expected_buf) - n, "%s %s", i ? "," : "",
                            key->choices[i]);
    return expected_buf;
  }
  case PIREC__CONFIG_STRING:
  case PIREC__CONFIG_PATH: break;
  }
  return "expected a valid value";
}

static bool word_in(const char *v, const char *const *words)
{
  for (size_t i = 0; words[i]; i++)
    if (strcmp(v, words[i]) == 0)
      return true;
  return false;
}

static int out_of_range(const struct pirec__config_key *key, const char **expected)
{
  char tmp[sizeof(expected_buf) - 32];
  snprintf(tmp, sizeof(tmp), "%s", pirec__config_expected(key));
  snprintf(expected_buf, sizeof(expected_buf), "out of range, %s", tmp);
  *expected = expected_buf;
  return -ERANGE;
}

static int bad_value(const struct pirec__config_key *key, const char **expected)
{
  *expected = pirec__config_expected(key);
  return -EINVAL;
}

static int parse_bool(const struct pirec__config_key *key, const char *text, struct pirec__config_value *out,
                      const char **expected)
{
  static const char *const yes[] = {"true", "yes", "on", "1", NULL};
  static const char *const no[] = {"false", "no", "off", "0", NULL};
  if (word_in(text, yes))
    out->v.b = true;
  else if (word_in(text, no))
    out->v.b = false;
  else
    return bad_value(key, expected);
  return 0;
}

static int parse_int(const struct pirec__config_key *key, const char *text, struct pirec__config_value *out,
                     const char **expected)
{
  char *end;
  const char *c = text;
  if (*c == '-' || *c == '+')
    c++;
  if (!(*c >= '0' && *c <= '9'))
    return bad_value(key, expected);
  errno = 0;
  long long v = strtoll(text, &end, key->base);
  if (*end)
    return bad_value(key, expected);
  if (errno == ERANGE || v < key->min || v > key->max)
    return out_of_range(key, expected);
  out->v.i = v;
  return 0;
}

/* A duration (ns) or a size (bytes): the text's syntax first, then the key's range. */
static int parse_quantity(const struct pirec__config_key *key, const char *text,
                          struct pirec__config_value *out, const char **expected)
{
  struct pirec__config_value v = *out;
  int r;
  bool in_range;
  if (key->type == PIREC__CONFIG_DURATION) {
    r = pirec_config_parse_duration(text, &v.v.i);
    in_range = v.v.i >= key->min && v.v.i <= key->max;
  } else {
    r = pirec_config_parse_size(text, &v.v.u);
    in_range = v.v.u >= (uint64_t)key->min && v.v.u <= (uint64_t)key->max;
  }
  if (r == -EINVAL)
    return bad_value(key, expected);
  if (r == -ERANGE || !in_range)
    return out_of_range(key, expected);
  *out = v;
  return 0;
}

/* One of the listed words, or an error that suggests the closest one. */
static int parse_enum(const struct pirec__config_key *key, const char *text, struct pirec__config_value *out,
                      const char **expected)
{
  size_t n = 0;
  for (; key->choices[n]; n++)
    if (strcmp(text, key->choices[n]) == 0) {
      out->s = key->choices[n];
      return 0;
    }
  const char *s = pirec__config_suggest(text, key->choices, n);
  if (!s)
    return bad_value(key, expected);
  char tmp[400];
  snprintf(tmp, sizeof(tmp), "%s", pirec__config_expected(key));
  snprintf(expected_buf, sizeof(expected_buf), "%s; did you mean '%s'?", tmp, s);
  *expected = expected_buf;
  return -EINVAL;
}

static int parse_string(const struct pirec__config_key *key, const char *text,
                        struct pirec__config_value *out, const char **expected)
{
  if (key->check) {
    const char *why = key->check(text);
    if (why) {
      snprintf(expected_buf, sizeof(expected_buf), "expected %s", why);
      *expected = expected_buf;
      return -EINVAL;
    }
  }
  out->s = text; /* the caller copies it */
  return 0;
}

int pirec__config_parse_value(const struct pirec__config_key *key, const char *text,
                              struct pirec__config_value *out, const char **expected)
{
  for (const char *c = text; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) {
      *expected = "expected a value without control characters";
      return -EINVAL;
    }
  /* "key =;x" reads as ";x" but any canonical "key = ;x" reads as a comment: such a value could not
   * be saved and read back, so it is refused wherever it comes from. */
  if (text[0] == ';') {
    *expected = "expected a value that does not start with ';' (which starts a comment)";
    return -EINVAL;
  }
  switch (key->type) {
  case PIREC__CONFIG_BOOL: return parse_bool(key, text, out, expected);
  case PIREC__CONFIG_INT: return parse_int(key, text, out, expected);
  case PIREC__CONFIG_DURATION:
  case PIREC__CONFIG_SIZE: return parse_quantity(key, text, out, expected);
  case PIREC__CONFIG_ENUM: return parse_enum(key, text, out, expected);
  case PIREC__CONFIG_STRING:
  case PIREC__CONFIG_PATH: return parse_string(key, text, out, expected);
  }
  return bad_value(key, expected);
}

void pirec__config_value_text(const struct pirec__config_key *key, const struct pirec__config_value *v,
                              char *buf, size_t len)
{
  switch (key->type) {
  case PIREC__CONFIG_BOOL: snprintf(buf, len, "%s", v->v.b ? "true" : "false"); break;
  case PIREC__CONFIG_INT:
    if (key->base == 8)
      snprintf(buf, len, "%04llo", (unsigned long long)v->v.i);
    else
      snprintf(buf, len, "%lld", (long long)v->v.i);
    break;
  case PIREC__CONFIG_DURATION: pirec__config_format_duration(v->v.i, buf, len); break;
  case PIREC__CONFIG_SIZE: pirec__config_format_size(v->v.u, buf, len); break;
  case PIREC__CONFIG_STRING:
  case PIREC__CONFIG_PATH:
  case PIREC__CONFIG_ENUM: snprintf(buf, len, "%s", v->s ? v->s : ""); break;
  }
}

/* ---- generated text ---------------------------------------------------------------------------- */

struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
  if (b->oom)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if (b->p && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + (size_t)n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

static char *sb_finish(struct sbuf *b)
{
  if (b->oom) {
    free(b->p);
    return NULL;
  }
  return b->p;
}

static const char *type_words(const struct pirec__config_key *key, char *buf, size_t len)
{
  char lo[32], hi[32];
  switch (key->type) {
  case PIREC__CONFIG_BOOL: return "bool";
  case PIREC__CONFIG_INT:
    if (key->base == 8)
      return "octal mode";
    snprintf(buf, len, "integer %lld..%lld", (long long)key->min, (long long)key->max);
    return buf;
  case PIREC__CONFIG_DURATION:
    pirec__config_format_duration(key->min, lo, sizeof(lo));
    pirec__config_format_duration(key->max, hi, sizeof(hi));
    snprintf(buf, len, "duration %s..%s", lo, hi);
    return buf;
  case PIREC__CONFIG_SIZE:
    pirec__config_format_size((uint64_t)key->min, lo, sizeof(lo));
    pirec__config_format_size((uint64_t)key->max, hi, sizeof(hi));
    snprintf(buf, len, "size %s..%s", lo, hi);
    return buf;
  case PIREC__CONFIG_STRING: return "string";
  case PIREC__CONFIG_PATH: return "path";
  case PIREC__CONFIG_ENUM: {
    size_t n = (size_t)snprintf(buf, len, "one of ");
    for (size_t i = 0; key->choices[i] && n < len; i++)
      n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", key->choices[i]);
    return buf;
  }
  }
  return "?";
}

/* Instance examples in the template: a synthetic camera is active so the example records something
 * anywhere; the audio and GPIO examples are commented out because they need hardware. */
static const struct {
  const char *kind;
  const char *name;
  bool active;
} template_instances[] = {{"camera", "camera0", true}, {"audio", "mic", false}, {"gpio", "start", false}};

char *pirec_config_defaults_text(void)
{
  struct sbuf b = {0};
  sb_printf(&b, "# pirec configuration. Generated by `pirec config defaults`; every key is shown with\n"
                "# its default. Check a file with `pirec config check FILE`; change one key with\n"
                "# `pirec config set FILE SECTION.KEY VALUE` (keeps comments). docs/CONFIG.md describes\n"
                "# every key. Comments start with '#' or ';' at the start of a line, or ' ;' after a value.\n"
                "# Durations take ns, us, ms, s, min, h; sizes take B, KiB, MiB, GiB, kB, MB, GB.\n");
  for (size_t k = 0; k < pirec__config_kind_count; k++) {
    const struct pirec__config_kind *kind = &pirec__config_kinds[k];
    const char *inst = NULL;
    bool active = true;
    for (size_t t = 0; t < COUNT(template_instances); t++)
      if (strcmp(template_instances[t].kind, kind->name) == 0) {
        inst = template_instances[t].name;
        active = template_instances[t].active;
      }
    const char *c = active ? "" : "# ";
    sb_printf(&b, "\n# [%s%s]: %s.\n", kind->name, kind->instance ? ".NAME" : "", kind->help);
    if (kind->instance)
      sb_printf(&b, "%s[%s.%s]\n", c, kind->name, inst ? inst : "example");
    else
      sb_printf(&b, "[%s]\n", kind->name);
    for (size_t i = 0; i < kind->key_count; i++) {
      const struct pirec__config_key *key = &kind->keys[i];
      char t[160];
      const char *v = key->def ? key->def : key->example;
      sb_printf(&b, "# %s [%s]\n", key->help, type_words(key, t, sizeof(t)));
      sb_printf(&b, "%s%s =%s%s\n", c, key->name, *v ? " " : "", v);
    }
  }
  return sb_finish(&b);
}

char *pirec_config_reference_markdown(void)
{
  struct sbuf b = {0};
  for (size_t k = 0; k < pirec__config_kind_count; k++) {
    const struct pirec__config_kind *kind = &pirec__config_kinds[k];
    sb_printf(&b, "%s### [%s%s]\n\n%c%s.\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n",
              k ? "\n" : "", kind->name, kind->instance ? ".NAME" : "",
              kind->help[0] >= 'a' && kind->help[0] <= 'z' ? kind->help[0] - 'a' + 'A' : kind->help[0],
              kind->help + 1);
    for (size_t i = 0; i < kind->key_count; i++) {
      const struct pirec__config_key *key = &kind->keys[i];
      char t[160];
      sb_printf(&b, "| `%s` | %s | %s%s%s | %s |\n", key->name, type_words(key, t, sizeof(t)),
                key->def ? "`" : "", key->def ? (*key->def ? key->def : "\"\"") : "required",
                key->def ? "`" : "", key->help);
    }
  }
  return sb_finish(&b);
}
