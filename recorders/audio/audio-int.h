#ifndef PIREC_AUDIO_INT_H
#define PIREC_AUDIO_INT_H

/* Inside recorders/audio: the ALSA device (alsa.c) under the trial's capture (audio.c). */

#include <alsa/asoundlib.h>
#include <stddef.h>
#include <stdint.h>

#include "pirec/audio.h"

struct pirec__audio_dev {
  snd_pcm_t *pcm;
  unsigned rate;
  unsigned channels;
  snd_pcm_uframes_t period; /* frames per block asked of the device */
  size_t frame_bytes;
};

/* Opens and configures opts->device for capture (interleaved, rate, channels and format exactly
 * as asked, no resampling beyond what the device name's plugins do; timestamps enabled and typed
 * CLOCK_MONOTONIC) and starts it. On failure writes a message naming the device into err and
 * returns a negative errno; nothing stays open. */
int pirec__audio_dev_open(struct pirec__audio_dev *d, const struct pirec_audio_options *opts, char *err,
                          size_t err_len);

/* Capture thread: waits up to 100 ms for a period and reads it into buf (period frames of room).
 * Returns the frames read (> 0) with *first_ts the device's CLOCK_MONOTONIC timestamp of the first
 * of them (INT64_MIN when the device gave none), 0 when nothing came in time, -EPIPE after an
 * overrun was recovered and the device restarted, or another negative errno (fatal: -ENODEV when
 * the device went away). */
int pirec__audio_dev_read(struct pirec__audio_dev *d, void *buf, int64_t *first_ts);

/* Closes the PCM; a closed or never opened device is a no-op. */
void pirec__audio_dev_close(struct pirec__audio_dev *d);

#endif
