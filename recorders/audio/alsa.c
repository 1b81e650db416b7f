/* The ALSA capture device: configuration, timestamped period reads and overrun recovery. API as
 * documented in alsa-lib's include/pcm.h (Debian libasound2-dev 1.2.8). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audio-int.h"

#define WAIT_MS 100

static snd_pcm_format_t alsa_format(enum pirec_audio_format f)
{
  switch (f) {
  case PIREC_AUDIO_S32: return SND_PCM_FORMAT_S32_LE;
  case PIREC_AUDIO_F32: return SND_PCM_FORMAT_FLOAT_LE;
  default: return SND_PCM_FORMAT_S16_LE;
  }
}

static int set_hw(struct pirec__audio_dev *d, const struct pirec_audio_options *o, const char **what)
{
  snd_pcm_hw_params_t *hw;
  snd_pcm_hw_params_alloca(&hw);
  int err = snd_pcm_hw_params_any(d->pcm, hw);
  if (err >= 0 && (*what = "interleaved access", 1))
    err = snd_pcm_hw_params_set_access(d->pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED);
  if (err >= 0 && (*what = "sample format", 1))
    err = snd_pcm_hw_params_set_format(d->pcm, hw, alsa_format(o->format));
  if (err >= 0 && (*what = "channel count", 1))
    err = snd_pcm_hw_params_set_channels(d->pcm, hw, o->channels);
  /* The exact rate or nothing: a silently resampled rate would make every time wrong. */
  if (err >= 0 && (*what = "rate", 1))
    err = snd_pcm_hw_params_set_rate_resample(d->pcm, hw, 0);
  if (err >= 0)
    err = snd_pcm_hw_params_set_rate(d->pcm, hw, o->rate, 0);
  unsigned period_us = o->period_us, buffer_us = o->period_us * o->buffer_periods;
  int dir = 0;
  if (err >= 0 && (*what = "period", 1))
    err = snd_pcm_hw_params_set_period_time_near(d->pcm, hw, &period_us, &dir);
  if (err >= 0 && (*what = "buffer", 1))
    err = snd_pcm_hw_params_set_buffer_time_near(d->pcm, hw, &buffer_us, &dir);
  if (err >= 0 && (*what = "hardware parameters", 1))
    err = snd_pcm_hw_params(d->pcm, hw);
  if (err >= 0)
    err = snd_pcm_hw_params_get_period_size(hw, &d->period, &dir);
  return err;
}

static int set_sw(struct pirec__audio_dev *d, const char **what)
{
  snd_pcm_sw_params_t *sw;
  snd_pcm_sw_params_alloca(&sw);
  *what = "timestamps";
  int err = snd_pcm_sw_params_current(d->pcm, sw);
  if (err >= 0)
    err = snd_pcm_sw_params_set_tstamp_mode(d->pcm, sw, SND_PCM_TSTAMP_ENABLE);
  /* CLOCK_MONOTONIC, the clock of every other row of the session (the default is gettimeofday). */
  if (err >= 0)
    err = snd_pcm_sw_params_set_tstamp_type(d->pcm, sw, SND_PCM_TSTAMP_TYPE_MONOTONIC);
  if (err >= 0)
    err = snd_pcm_sw_params_set_avail_min(d->pcm, sw, d->period);
  if (err >= 0)
    err = snd_pcm_sw_params(d->pcm, sw);
  return err;
}

int pirec__audio_dev_open(struct pirec__audio_dev *d, const struct pirec_audio_options *o, char *msg,
                          size_t msg_len)
{
  memset(d, 0, sizeof *d);
  int err = snd_pcm_open(&d->pcm, o->device, SND_PCM_STREAM_CAPTURE, SND_PCM_NONBLOCK);
  if (err < 0) {
    snprintf(msg, msg_len, "cannot open ALSA device '%s': %s", o->device, snd_strerror(err));
    d->pcm = NULL;
    return err;
  }
  const char *what = "hardware parameters";
  err = set_hw(d, o, &what);
  if (err >= 0)
    err = set_sw(d, &what);
  if (err >= 0 && (what = "start", 1))
    err = snd_pcm_start(d->pcm);
  if (err < 0) {
    snprintf(msg, msg_len, "ALSA device '%s' refused the %s (rate %u, %u channels): %s", o->device, what,
             o->rate, o->channels, snd_strerror(err));
    pirec__audio_dev_close(d);
    return err;
  }
  d->rate = o->rate;
  d->channels = o->channels;
  d->frame_bytes = (size_t)o->channels * pirec_audio_format_bytes(o->format);
  return 0;
}

static int recover(struct pirec__audio_dev *d, int err)
{
  err = snd_pcm_recover(d->pcm, err, 1);
  if (err >= 0)
    err = snd_pcm_start(d->pcm);
  return err < 0 ? err : -EPIPE;
}

static int64_t ts_ns(const snd_htimestamp_t *ts)
{
  return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

int pirec__audio_dev_read(struct pirec__audio_dev *d, void *buf, int64_t *first_ts)
{
  int r = snd_pcm_wait(d->pcm, WAIT_MS);
  if (r == 0)
    return 0;
  if (r == -EPIPE || r == -ESTRPIPE)
    return recover(d, r);
  if (r < 0)
    return r;
  snd_pcm_sframes_t n = snd_pcm_readi(d->pcm, buf, d->period);
  if (n == -EAGAIN)
    return 0;
  if (n == -EPIPE || n == -ESTRPIPE)
    return recover(d, (int)n);
  if (n < 0)
    return (int)n;
  /* The timestamp is of the last pointer update, when avail frames were waiting after the ones
   * just read: the first of ours came (avail + n) frames before it. */
  snd_pcm_uframes_t avail = 0;
  snd_htimestamp_t ts;
  if (snd_pcm_htimestamp(d->pcm, &avail, &ts) == 0 && (ts.tv_sec || ts.tv_nsec))
    *first_ts = ts_ns(&ts) - (int64_t)((avail + (uint64_t)n) * 1000000000 / d->rate);
  else
    *first_ts = INT64_MIN;
  return (int)n;
}

void pirec__audio_dev_close(struct pirec__audio_dev *d)
{
  if (d->pcm)
    snd_pcm_close(d->pcm);
  d->pcm = NULL;
}
