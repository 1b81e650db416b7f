/* The recorder mains' start under the controller (see run.h). A file of its own so that a main
 * without the protocol (pirec-eyesim) does not link the recorder library. */
#include <stdio.h>

#include "pirec/error.h"
#include "run.h"

int run_serve(uv_loop_t *loop, const char *name, const struct pirec_recorder_ops *ops, void *user,
              const char *prog, pirec_recorder_close_cb on_closed, struct pirec_recorder **out)
{
  *out = NULL;
  int r = pirec_recorder_new(loop, name, ops, user, NULL, out);
  if (r == 0)
    r = pirec_recorder_start(*out);
  if (r < 0) {
    fprintf(stderr, "%s: cannot start the protocol: %s\n", prog, pirec_strerror(r));
    if (*out)
      pirec_recorder_close(*out, on_closed); /* frees it once closed: the caller keeps no pointer */
    *out = NULL;
  }
  return r;
}
