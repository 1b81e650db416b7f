#ifndef PIREC_CONTROLLER_INT_H
#define PIREC_CONTROLLER_INT_H

/* Shared between controller.c and client.c. */

/* Fills paths (each 108 bytes: sun_path) with the places a control socket may be, in the order a
 * client tries them: the config's [control] socket when set, $RUNTIME_DIRECTORY/control.sock,
 * $XDG_RUNTIME_DIR/pirec/control.sock, /run/pirec/control.sock, /tmp/pirec-UID/control.sock.
 * Returns how many were written. */
int pirec__control_socket_candidates(const char *config_path, char paths[][108], int max);

#endif
