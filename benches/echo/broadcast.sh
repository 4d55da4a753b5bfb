#!/bin/sh
# Broadcast benchmark: one publisher to N subscribers through each crate's
# broadcast server (benches/echo/src/bin/broadcast-server.rs), received and
# checked by the raw-TCP load generator; prints markdown tables.
#
#   benches/echo/broadcast.sh                                # 1,000 and 5,000 subscribers, 20 B and 1 KiB
#   benches/echo/broadcast.sh --subs 100 --sizes 20 --secs 2 # a quick look
#
# Options: --crates tether,tungstenite,fastwebsockets, --subs LIST,
# --sizes LIST (20, 1k...), --warmup SECS, --secs SECS. Needs strace for the
# system-call column (apt-get install strace); without it the column is "-".
set -eu
cd "$(dirname "$0")"
cargo build --release --quiet --bins
exec target/release/loadgen broadcast --server target/release/broadcast-server "$@"
