/* inproc: the in-process transport for the embedded mode (`tern run` without a cluster):
 * coordinator and worker threads in one process talk over ZeroMQ inproc:// on the shared
 * context, through the very same code as tcp:// — no copy of the protocol, no special case.
 * inproc needs no TCP options and no CURVE (nothing leaves the process; transport.c drops the
 * keys). Either side may start first: inproc connect-before-bind works since ZeroMQ 4.0. */
#include "proto/transport.h"

static int inproc_open(tp_conn_t *c, int listen, char *err, size_t errlen) {
    return tp_zmq_open(c, listen, 0, err, errlen);
}

/* same poll as tcp/ipc: one zmq_poll may wait on inproc and tcp conns together */
const tp_ops_t tp_inproc_ops = {"inproc", inproc_open, tp_zmq_send, tp_zmq_recv, tp_zmq_poll, tp_zmq_close};
