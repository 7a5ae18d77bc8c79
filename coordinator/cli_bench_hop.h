/* cli_bench_hop: `tern bench --hop` — the cost of one pipeline hop: a Forward message with a
 * hidden state through the real transport, one way and round trip. Not here: model runs
 * (cli_bench.c). */
#ifndef TERN_CLI_BENCH_HOP_H
#define TERN_CLI_BENCH_HOP_H

/* argv[0] is the subcommand name ("bench"); --hop itself is skipped. Returns the exit status. */
int cli_bench_hop(int argc, char **argv);

#endif
