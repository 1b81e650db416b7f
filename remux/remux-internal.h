#ifndef PIREC_REMUX_INTERNAL_H
#define PIREC_REMUX_INTERNAL_H

/* Shared by the engine (remux.c, timing.c) and the command driver (run.c); nothing private is
 * exchanged between them yet beyond the public header. */
#include "pirec/remux.h"

#endif
