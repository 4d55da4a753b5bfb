//! tether-tokio against Python `websockets` (interop/python/peer.py), as
//! client and as server, without and with permessage-deflate. Test names:
//! `<scenario>::tether_<role>[_deflate]` and `deflate::tether_<role>_<side>_matrix`;
//! the scenarios are described in `tether_interop::Scenario`.

tether_interop::peer_tests!(Python);
