/* A capture PCM for the tests: an alsa-lib external (ioplug) plugin, loaded by libasound from an
 * ALSA configuration file, that needs no sound card and no kernel driver. alsa-lib's own software
 * PCMs cannot stand in for a device here: `type null` hands out zeros as fast as they are read
 * (one second in 0.09 s), and `type file` with an infile pads every short read with zeros, so
 * neither is paced. This one is: a timerfd on CLOCK_MONOTONIC wakes the reader once a period, its
 * hardware pointer is the time since start times the rate, and a reader that falls more than a
 * buffer behind gets an overrun (-EPIPE), as from a sound card.
 *
 * With `fail_after_ms N` it is unplugged N ms after its first start: an overrun, after which it
 * refuses to start again (-ENODEV), as a USB card pulled out.
 * With `drift_ppm N` in its definition its clock runs N ppm fast against CLOCK_MONOTONIC, as a
 * card's crystal does (the frame index counts the card's frames, not CLOCK_MONOTONIC's).
 *
 * Its signal tells the tests where every frame came from: 16-bit stereo, channel 0 the low 16 bits
 * and channel 1 the high 16 bits of the frame's index counted from the first start, the index
 * running on in real time across overruns (a restart after an overrun picks up where the clock
 * is, so the frames an overrun lost show as a jump of exactly that many).
 *
 * API: alsa-lib include/pcm_ioplug.h, include/pcm_external.h (Debian libasound2-dev 1.2.8). */
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct tick {
  snd_pcm_ioplug_t io;
  long drift_ppm;     /* the "card" runs this much fast (negative: slow) against CLOCK_MONOTONIC */
  long fail_after_ms; /* > 0: the "card" is unplugged this long after the first start */
  int gone;
  int64_t t0;       /* the first start: frame index 0 */
  int64_t start_ns; /* this start */
  uint64_t base;    /* the frame index at this start */
};

static int64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Frames the card's clock counts in ns of CLOCK_MONOTONIC. */
static uint64_t frames_in(const struct tick *t, int64_t ns)
{
  int64_t nominal = ns / 1000 * (int64_t)t->io.rate / 1000000;
  return (uint64_t)(nominal + nominal * t->drift_ppm / 1000000);
}

static uint64_t frames_since(const struct tick *t, int64_t from)
{
  return frames_in(t, now_ns() - from);
}

static int tick_start(snd_pcm_ioplug_t *io)
{
  struct tick *t = io->private_data;
  if (t->gone)
    return -ENODEV;
  t->start_ns = now_ns();
  if (!t->t0)
    t->t0 = t->start_ns;
  t->base = frames_in(t, t->start_ns - t->t0);
  int64_t period_ns = (int64_t)io->period_size * 1000000000 / io->rate * 1000000 / (1000000 + t->drift_ppm);
  int64_t first = t->start_ns + period_ns;
  struct itimerspec its = {{period_ns / 1000000000, period_ns % 1000000000},
                           {first / 1000000000, first % 1000000000}};
  return timerfd_settime(io->poll_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

static int tick_stop(snd_pcm_ioplug_t *io)
{
  struct itimerspec its = {{0, 0}, {0, 0}};
  timerfd_settime(io->poll_fd, 0, &its, NULL);
  return 0;
}

static snd_pcm_sframes_t tick_pointer(snd_pcm_ioplug_t *io)
{
  struct tick *t = io->private_data;
  if (io->state != SND_PCM_STATE_RUNNING)
    return 0;
  if (t->fail_after_ms > 0 && now_ns() - t->t0 > (int64_t)t->fail_after_ms * 1000000) {
    t->gone = 1; /* as a USB card pulled out: the stream stops and will not start again */
    return -EPIPE;
  }
  uint64_t pos = frames_since(t, t->start_ns);
  if (pos > io->appl_ptr + io->buffer_size)
    return -EPIPE; /* the reader fell a buffer behind: the frames in between are gone */
  return (snd_pcm_sframes_t)(pos % io->buffer_size);
}

static snd_pcm_sframes_t tick_transfer(snd_pcm_ioplug_t *io, const snd_pcm_channel_area_t *areas,
                                       snd_pcm_uframes_t offset, snd_pcm_uframes_t size)
{
  struct tick *t = io->private_data;
  uint64_t index = t->base + io->appl_ptr;
  for (snd_pcm_uframes_t i = 0; i < size; i++, index++)
    for (unsigned c = 0; c < io->channels; c++) {
      const snd_pcm_channel_area_t *a = &areas[c];
      char *p = (char *)a->addr + (a->first + (offset + i) * a->step) / 8;
      uint16_t v = (uint16_t)(c == 0 ? index : index >> 16);
      memcpy(p, &v, 2);
    }
  return (snd_pcm_sframes_t)size;
}

static int tick_poll_revents(snd_pcm_ioplug_t *io, struct pollfd *pfd, unsigned int nfds,
                             unsigned short *revents)
{
  uint64_t expirations;
  *revents = 0;
  if (nfds >= 1 && (pfd[0].revents & POLLIN) && read(io->poll_fd, &expirations, sizeof expirations) > 0)
    *revents = POLLIN;
  return 0;
}

static int tick_close(snd_pcm_ioplug_t *io)
{
  struct tick *t = io->private_data;
  close(io->poll_fd);
  free(t);
  return 0;
}

static const snd_pcm_ioplug_callback_t callbacks = {
    .start = tick_start,
    .stop = tick_stop,
    .pointer = tick_pointer,
    .transfer = tick_transfer,
    .poll_revents = tick_poll_revents,
    .close = tick_close,
};

static int set_constraints(snd_pcm_ioplug_t *io)
{
  static const unsigned access[] = {SND_PCM_ACCESS_RW_INTERLEAVED};
  static const unsigned formats[] = {SND_PCM_FORMAT_S16_LE};
  int err = snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_ACCESS, 1, access);
  if (err >= 0)
    err = snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_FORMAT, 1, formats);
  if (err >= 0)
    err = snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_CHANNELS, 1, 2);
  if (err >= 0)
    err = snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_RATE, 8000, 192000);
  if (err >= 0)
    err = snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_PERIOD_BYTES, 64, 1 << 20);
  if (err >= 0)
    err = snd_pcm_ioplug_set_param_minmax(io, SND_PCM_IOPLUG_HW_PERIODS, 2, 64);
  return err;
}

/* An integer setting of the PCM's definition (`drift_ppm 500`), 0 when absent. */
static long conf_long(snd_config_t *conf, const char *key)
{
  snd_config_iterator_t i, next;
  long v = 0;
  snd_config_for_each(i, next, conf)
  {
    snd_config_t *n = snd_config_iterator_entry(i);
    const char *id;
    if (snd_config_get_id(n, &id) == 0 && strcmp(id, key) == 0)
      snd_config_get_integer(n, &v);
  }
  return v;
}

SND_PCM_PLUGIN_DEFINE_FUNC(pirectick)
{
  (void)root;
  if (stream != SND_PCM_STREAM_CAPTURE)
    return -EINVAL;
  struct tick *t = calloc(1, sizeof *t);
  if (!t)
    return -ENOMEM;
  t->drift_ppm = conf_long(conf, "drift_ppm");
  t->fail_after_ms = conf_long(conf, "fail_after_ms");
  t->io.version = SND_PCM_IOPLUG_VERSION;
  t->io.name = "pirec test tick";
  t->io.flags = SND_PCM_IOPLUG_FLAG_MONOTONIC;
  t->io.callback = &callbacks;
  t->io.private_data = t;
  t->io.poll_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  t->io.poll_events = POLLIN;
  if (t->io.poll_fd < 0) {
    free(t);
    return -errno;
  }
  int err = snd_pcm_ioplug_create(&t->io, name, stream, mode);
  if (err < 0) {
    close(t->io.poll_fd);
    free(t);
    return err;
  }
  err = set_constraints(&t->io);
  if (err < 0) {
    snd_pcm_ioplug_delete(&t->io);
    return err;
  }
  *pcmp = t->io.pcm;
  return 0;
}
SND_PCM_PLUGIN_SYMBOL(pirectick);
