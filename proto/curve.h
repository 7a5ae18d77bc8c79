/* curve: ZeroMQ CURVE keys for tern links — key files (`tern keygen`), and the process's ZAP
 * handler, a thread that lets a listening socket's clients in only when their public key is in
 * that socket's allowed list (refusals are logged with the key). Keys are Z85 text, 40 chars.
 * Not here: socket options (zmq.c sets them from tp_curve_t). */
#ifndef TERN_CURVE_H
#define TERN_CURVE_H
#include "proto/transport.h"
#include <stddef.h>

/* A fresh key pair. 0 or TERN_ENOTSUP (libzmq built without CURVE). */
int curve_keypair(char pub[TP_KEY_Z85], char sec[TP_KEY_Z85], char *err, size_t errlen);
/* Writes PREFIX.key (secret, mode 0600) and PREFIX.pub for a fresh pair; pub gets the public
 * key. Refuses to overwrite unless force. Errors: TERN_EIO, TERN_EINVAL (exists). */
int curve_write_keypair(const char *prefix, int force, char pub[TP_KEY_Z85], char *err, size_t errlen);
/* Reads one Z85 key from a file: the first line that is not empty or a '#' comment, which
 * must be a valid 40-character Z85 key. Warns when a .key file is readable by others. */
int curve_read_key(const char *path, char key[TP_KEY_Z85], char *err, size_t errlen);
/* Fills cv's own pair from PREFIX.key (the public key is derived from the secret one). */
int curve_load_identity(const char *prefix, tp_curve_t *cv, char *err, size_t errlen);
/* Reads every DIR/ *.pub into a new array (*keys, free() it) of *n keys. */
int curve_read_dir(const char *dir, char (**keys)[TP_KEY_Z85], int *n, char *err, size_t errlen);

/* ZAP: registers a listening socket's policy under a fresh domain name (written to domain,
 * which the socket must set as ZMQ_ZAP_DOMAIN before bind); starts the handler on first use.
 * The keys are copied. Errors: TERN_EIO (handler could not start), TERN_ENOMEM. */
int curve_zap_register(const tp_curve_t *cv, char domain[32], char *err, size_t errlen);
void curve_zap_unregister(const char *domain);
/* Stops the handler (tp_term does this); clients of CURVE listeners are then let in unchecked,
 * so call it only when every conn is closed. */
void curve_zap_stop(void);

#endif
