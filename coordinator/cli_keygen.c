/* cli_keygen: `tern keygen -o DIR/NAME` writes a CURVE key pair for a cluster node:
 * NAME.key (secret, mode 0600) and NAME.pub (public, Z85), and prints the public key.
 * Give every node its pair and put the .pub files of the nodes that may connect in the
 * directory named by the cluster file's `security.keys`. Not here: key checking (curve.c). */
#include "core/err.h"
#include "core/opt.h"
#include "proto/curve.h"
#include <stdio.h>

int cli_keygen(int argc, char **argv) {
    const char *out = NULL;
    int force = 0;
    const opt_t opts[] = {
        {"-o", "--output", OPT_STR, &out, "DIR/NAME", "write DIR/NAME.key and DIR/NAME.pub", 0, 0},
        {"-f", "--force", OPT_FLAG, &force, NULL, "replace existing key files", 0, 0},
        OPT_END,
    };
    char err[512], *pos[4];
    int npos = 0;
    int rc = opt_parse(opts, argc, argv, pos, 4, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern keygen -o DIR/NAME [--force]", opts);
        return 0;
    }
    if (rc < 0 || npos > 1 || (!out && npos == 0)) {
        fprintf(stderr, "tern keygen: %s\n", rc < 0 ? err : "usage: tern keygen -o DIR/NAME");
        return 2;
    }
    if (!out) out = pos[0];
    char pub[TP_KEY_Z85];
    if ((rc = curve_write_keypair(out, force, pub, err, sizeof err))) {
        fprintf(stderr, "tern keygen: %s\n", err);
        return 1;
    }
    printf("wrote %s.key (secret, mode 0600) and %s.pub\npublic key: %s\n", out, out, pub);
    return 0;
}
