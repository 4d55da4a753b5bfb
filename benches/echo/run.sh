#!/bin/sh
# End-to-end echo benchmark: builds the servers and the load generator in
# release mode, then runs every crate on every workload and the idle-memory
# mode, and prints markdown tables (progress goes to stderr).
#
#   benches/echo/run.sh                                 # everything, about 3 minutes
#   ROUNDS=3 benches/echo/run.sh                        # median of 3 rounds, about 9 minutes
#   WARMUP=2 SECS=5 benches/echo/run.sh                 # longer windows
#   benches/echo/run.sh --crates tether,fastwebsockets --workloads 20b,20b-p16 --kinds binary --no-idle
#
# Crates: tether (tether-tokio), tungstenite (tokio-tungstenite), fastwebsockets,
# tokio-websockets, tether-smol, tether-async-std, async-tungstenite-smol,
# tether-blocking, tether-h2 (tether-tokio over HTTP/2, 100 WebSockets per
# connection). With tether and another tether adapter in the list, a table
# of the issue-10 ratios follows the CPU table.
#
# Options (after the script name): --crates LIST, --workloads LIST
# (20b, 20b-p16, 1k, 16k, 1m), --kinds text,binary, --warmup SECS, --secs SECS, --pin
# (load generator on CPU 0, servers on CPU 1),
# --rounds N (median of N rounds), --idle-conns N, --no-idle, --syscalls
# (system calls per message, under strace), --callgrind (instructions per
# message instead of times: each server under valgrind's callgrind; needs
# valgrind), --external NAME=COMMAND (a server built elsewhere).
# Env: WARMUP, SECS, ROUNDS (defaults 1, 3 and 1).
set -eu
cd "$(dirname "$0")"
cargo build --release --quiet --bins
exec target/release/loadgen suite --server target/release/echo-server \
    --warmup "${WARMUP:-1}" --secs "${SECS:-3}" --rounds "${ROUNDS:-1}" "$@"
