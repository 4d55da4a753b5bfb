//! Every tether shell against Node `ws` (interop/node/peer.mjs), as client and as
//! server, without and with permessage-deflate. Test names:
//! `<shell>::<scenario>::tether_<role>[_deflate]` and
//! `<shell>::deflate::tether_<role>_<side>_matrix`, tether-mio (`mio::`) as
//! server only; the scenarios are described in `tether_interop::Scenario`.

tether_interop::peer_tests!(Node);
