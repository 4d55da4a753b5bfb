//! A client core and a server core wired to each other in memory, with
//! virtual time: the close handshake from both sides, close races, timeouts,
//! keepalive and idle failure (RFC 6455 sections 5.5 and 7).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tether_proto::{CloseCause, CloseCode, CloseReply, Closed, Config, DataKind, Event, Message, SendError, State};
use tether_tests::{bytes, Pair};

fn closed(code: CloseCode, reason: &str, cause: CloseCause) -> Closed {
    Closed {
        code,
        reason: reason.into(),
        cause,
    }
}

#[test]
fn messages_both_ways() {
    let mut pair = Pair::new();
    pair.client.conn.send_text("hello").unwrap();
    pair.client.conn.send_binary(&[0; 70_000]).unwrap();
    pair.server.conn.send(Message::Binary(vec![1; 100_000].into())).unwrap();
    pair.chunk = 1000;
    pair.drive();
    assert_eq!(
        pair.server.messages(),
        vec![Message::Text("hello".into()), Message::Binary(vec![0; 70_000].into())]
    );
    assert_eq!(pair.client.messages(), vec![Message::Binary(vec![1; 100_000].into())]);
}

#[test]
fn rfc6455_5_5_2_ping_pong() {
    let mut pair = Pair::new();
    pair.client.conn.ping(b"are you there").unwrap();
    pair.drive();
    assert_eq!(pair.server.events, vec![Event::Ping(bytes(b"are you there"))]);
    assert_eq!(pair.client.events, vec![Event::Pong(bytes(b"are you there"))]);
}

#[test]
fn rfc6455_5_4_fragments_interleaved_with_control_frames() {
    let mut pair = Pair::new();
    let c = &mut pair.client.conn;
    c.send_fragment(DataKind::Text, "ελλη".as_bytes(), false).unwrap();
    c.ping(b"1").unwrap();
    c.send_fragment(DataKind::Text, &"νικά".as_bytes()[..3], false).unwrap();
    c.send_fragment(DataKind::Text, &"νικά".as_bytes()[3..], true).unwrap();
    pair.chunk = 3;
    pair.drive();
    assert_eq!(
        pair.server.events,
        vec![
            Event::Ping(bytes(b"1")),
            Event::Message(Message::Text("ελληνικά".into()))
        ]
    );
}

mod rfc6455_7_close_handshake {
    use super::*;

    #[test]
    fn started_by_client() {
        let mut pair = Pair::new();
        pair.client.conn.close(CloseCode::NORMAL, "done", pair.now).unwrap();
        assert_eq!(pair.client.conn.state(), State::Closing);
        pair.drive();
        assert_eq!(
            pair.server.closed(),
            Some(&closed(CloseCode::NORMAL, "done", CloseCause::Remote))
        );
        // The server echoed the code and the reason (5.5.1).
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::NORMAL, "done", CloseCause::Local))
        );
        // The server closed the transport first (7.1.1); the client followed on EOF.
        assert!(pair.server.transport_closed && pair.client.eof_received);
        assert!(pair.is_shut_down());
        assert_eq!(pair.next_deadline(), None, "no timer left running");
    }

    #[test]
    fn started_by_server() {
        let mut pair = Pair::new();
        pair.server
            .conn
            .close(CloseCode::GOING_AWAY, "restart", pair.now)
            .unwrap();
        pair.drive();
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::GOING_AWAY, "restart", CloseCause::Remote))
        );
        assert_eq!(
            pair.server.closed(),
            Some(&closed(CloseCode::GOING_AWAY, "restart", CloseCause::Local))
        );
        assert!(pair.is_shut_down());
        assert_eq!(pair.next_deadline(), None);
    }

    #[test]
    fn rfc6455_5_5_1_answered_as_the_application_chose() {
        let mut server = Config::default();
        server.close_reply = CloseReply::with(CloseCode::GOING_AWAY, "shutting down").unwrap();
        let mut pair = Pair::with_configs(Config::default(), server);
        pair.client.conn.close(CloseCode::NORMAL, "done", pair.now).unwrap();
        pair.drive();
        assert_eq!(
            pair.server.closed(),
            Some(&closed(CloseCode::NORMAL, "done", CloseCause::Remote))
        );
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::GOING_AWAY, "shutting down", CloseCause::Local))
        );
        assert!(pair.is_shut_down());
    }

    #[test]
    fn both_at_once() {
        let mut pair = Pair::new();
        pair.client.conn.close(CloseCode::NORMAL, "client", pair.now).unwrap();
        pair.server
            .conn
            .close(CloseCode::GOING_AWAY, "server", pair.now)
            .unwrap();
        pair.drive();
        // Each side sees the other's close while closing: both started it.
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::GOING_AWAY, "server", CloseCause::Local))
        );
        assert_eq!(
            pair.server.closed(),
            Some(&closed(CloseCode::NORMAL, "client", CloseCause::Local))
        );
        assert!(pair.is_shut_down());
    }

    #[test]
    fn closing_again_on_either_side_is_ok_and_sends_nothing() {
        let mut pair = Pair::new();
        pair.client.conn.close(CloseCode::NORMAL, "once", pair.now).unwrap();
        pair.client.poll();
        let written = pair.client.written;
        // Closing: a second close is a no-op.
        assert_eq!(pair.client.conn.close(CloseCode::GOING_AWAY, "twice", pair.now), Ok(()));
        pair.client.poll();
        assert_eq!(pair.client.written, written);
        pair.drive();
        assert!(pair.is_shut_down());
        // Closed, on both ends: still a no-op, and the end stays as it was.
        for end in [&mut pair.client, &mut pair.server] {
            let before = end.conn.closed().cloned();
            let written = end.written;
            assert_eq!(end.conn.close(CloseCode::NORMAL, "", pair.now), Ok(()));
            end.poll();
            assert_eq!(end.written, written);
            assert_eq!(end.conn.closed().cloned(), before);
        }
        assert_eq!(
            pair.server.conn.closed(),
            Some(&closed(CloseCode::NORMAL, "once", CloseCause::Remote))
        );
    }

    #[test]
    fn a_completed_handshake_is_clean_on_both_ends() {
        let mut pair = Pair::new();
        pair.server
            .conn
            .close(CloseCode::GOING_AWAY, "restart", pair.now)
            .unwrap();
        pair.drive();
        assert!(pair.client.conn.closed().is_some_and(Closed::is_clean));
        assert!(pair.server.conn.closed().is_some_and(Closed::is_clean));
    }

    #[test]
    fn messages_in_flight_before_the_close_are_delivered() {
        let mut pair = Pair::new();
        pair.server.conn.send_text("last words").unwrap();
        pair.client.conn.send_text("crossing").unwrap();
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        pair.drive();
        assert_eq!(pair.client.messages(), vec![Message::Text("last words".into())]);
        assert_eq!(pair.server.messages(), vec![Message::Text("crossing".into())]);
        // The server's text was written before it saw the close: it is not lost.
        assert!(pair.is_shut_down());
    }

    #[test]
    fn nothing_is_sent_after_a_close() {
        let mut pair = Pair::new();
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        assert_eq!(pair.client.conn.send_text("x"), Err(SendError::Closed));
        assert_eq!(pair.client.conn.ping(b""), Err(SendError::Closed));
        pair.drive();
        assert_eq!(pair.server.conn.send_text("x"), Err(SendError::Closed));
    }

    #[test]
    fn close_timeout_when_the_peer_never_answers() {
        let mut pair = Pair::new();
        // The close frame never reaches the server, which stays silent.
        pair.client.blackhole = true;
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        pair.drive();
        assert_eq!(pair.client.closed(), None);
        let start = pair.now;
        assert!(pair.step(Duration::from_secs(60)));
        assert_eq!(pair.now - start, Config::default().close_timeout);
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::ABNORMAL, "", CloseCause::CloseTimeout))
        );
        assert!(pair.client.transport_closed);
    }

    #[test]
    fn client_closes_the_transport_if_the_server_does_not() {
        // The server answers the close but never closes its transport
        // (simulated: its EOF is lost).
        let mut pair = Pair::new();
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        pair.client.poll();
        let wire = std::mem::take(&mut pair.client.in_flight);
        pair.server.conn.handle_read(&wire, pair.now);
        pair.server.poll();
        let reply = std::mem::take(&mut pair.server.in_flight);
        pair.client.conn.handle_read(&reply, pair.now);
        pair.client.poll();
        assert_eq!(pair.client.conn.state(), State::Closed);
        assert!(!pair.client.conn.should_close_transport(), "waits for the server first");
        let deadline = pair.client.conn.poll_timeout().unwrap();
        assert_eq!(deadline - pair.now, Config::default().close_timeout);
        pair.client.conn.handle_timeout(deadline);
        assert!(pair.client.conn.should_close_transport());
    }

    #[test]
    fn transport_lost_is_1006() {
        let mut pair = Pair::new();
        pair.server.transport_closed = true; // the server vanished
        pair.drive();
        assert_eq!(
            pair.client.closed(),
            Some(&closed(CloseCode::ABNORMAL, "", CloseCause::Abnormal))
        );
        assert!(pair.client.conn.closed().is_some_and(|c| !c.is_clean()));
    }
}

mod keepalive {
    use super::*;

    fn keepalive(interval: u64) -> Config {
        let mut config = Config::default();
        config.ping_interval = Some(Duration::from_secs(interval));
        config.idle_timeout = Some(Duration::from_secs(2 * interval));
        config
    }

    #[test]
    fn pings_keep_a_quiet_connection_alive() {
        let mut pair = Pair::with_configs(keepalive(20), keepalive(120));
        pair.run_for(Duration::from_secs(3600));
        assert_eq!(pair.client.conn.state(), State::Open);
        assert_eq!(pair.server.conn.state(), State::Open);
        let pings = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Ping(_))).count();
        // The client pings every 20 s of silence; its pings keep the server
        // from pinging at all.
        assert_eq!(pings(&pair.server.events), 180);
        assert_eq!(pings(&pair.client.events), 0);
    }

    #[test]
    fn idle_timeout_fails_a_silent_peer() {
        let mut pair = Pair::with_configs(Config::default(), keepalive(10));
        // The client's machine went away: nothing it writes arrives.
        pair.client.blackhole = true;
        pair.run_for(Duration::from_secs(60));
        assert_eq!(
            pair.server.closed(),
            Some(&closed(CloseCode::ABNORMAL, "", CloseCause::IdleTimeout))
        );
        assert!(pair.server.transport_closed);
        // Ping at 10 s, failure at 20 s after the last byte received.
        assert!(pair.server.events.iter().all(|e| matches!(e, Event::Closed(_))));
    }

    #[test]
    fn application_traffic_defers_pings() {
        let mut pair = Pair::with_configs(Config::default(), keepalive(10));
        for _ in 0..10 {
            pair.client.conn.send_text("tick").unwrap();
            pair.drive();
            pair.run_for(Duration::from_secs(9));
        }
        assert_eq!(
            pair.client
                .events
                .iter()
                .filter(|e| matches!(e, Event::Ping(_)))
                .count(),
            0
        );
        assert_eq!(pair.server.messages().len(), 10);
    }
}

mod limits {
    use super::*;

    #[test]
    fn oversized_message_fails_with_1009_on_both_sides() {
        let mut server = Config::default();
        server.max_message_size = 1000;
        let mut pair = Pair::with_configs(Config::default(), server);
        pair.client.conn.send_binary(&[0; 1001]).unwrap();
        pair.drive();
        assert_eq!(pair.server.closed().unwrap().code, CloseCode::MESSAGE_TOO_BIG);
        assert!(matches!(pair.server.closed().unwrap().cause, CloseCause::Protocol(_)));
        assert_eq!(pair.client.closed().unwrap().code, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(pair.client.closed().unwrap().cause, CloseCause::Remote);
        assert!(pair.is_shut_down());
    }
}

/// Output stays in the core until written: partial writes, batching, and
/// the linger of output a peer does not read once the transport is to be
/// closed.
mod output {
    use super::*;

    #[test]
    fn partial_writes_deliver_every_message() {
        let mut pair = Pair::new();
        pair.client.write_size = 7;
        pair.server.write_size = 1000;
        pair.client.conn.send_text("hello").unwrap();
        pair.client.conn.send_binary(&[3; 70_000]).unwrap();
        pair.server.conn.send(Message::Binary(vec![1; 100_000].into())).unwrap();
        pair.server.conn.send_text("after").unwrap();
        pair.drive();
        assert_eq!(
            pair.server.messages(),
            vec![Message::Text("hello".into()), Message::Binary(vec![3; 70_000].into())]
        );
        assert_eq!(
            pair.client.messages(),
            vec![Message::Binary(vec![1; 100_000].into()), Message::Text("after".into())]
        );
    }

    #[test]
    fn replies_to_one_read_leave_in_one_write() {
        let mut pair = Pair::new();
        for i in 0..20u8 {
            pair.client.conn.ping(&[i]).unwrap();
        }
        pair.client.poll();
        let writes = pair.server.writes;
        pair.drive();
        // Twenty pongs, one write.
        assert_eq!(pair.server.writes, writes + 1);
        assert_eq!(
            pair.client
                .events
                .iter()
                .filter(|e| matches!(e, Event::Pong(_)))
                .count(),
            20
        );
    }

    #[test]
    fn a_peer_that_stops_reading_loses_the_output_after_the_close_timeout() {
        let mut pair = Pair::new();
        // The client stops reading: nothing the server writes is taken.
        pair.server.stalled = true;
        pair.server.conn.send_binary(&[7; 1000]).unwrap();
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        pair.drive();
        // The server answered and must close, but its output is unwritten.
        assert_eq!(pair.server.conn.state(), State::Closed);
        assert!(pair.server.conn.should_close_transport());
        assert!(pair.server.conn.pending_transmit() > 1000);
        assert!(!pair.server.transport_closed);
        let start = pair.now;
        // The client's own close timeout and the server's linger are the
        // same length: both fire in the same step.
        assert!(pair.step(Duration::from_secs(60)));
        assert_eq!(pair.now - start, Config::default().close_timeout);
        assert!(pair.server.conn.output_abandoned());
        assert_eq!(pair.server.conn.pending_transmit(), 0);
        assert!(pair.server.transport_closed);
        assert!(pair.server.conn.closed().is_some_and(Closed::is_clean));
        pair.run_for(Duration::from_secs(60));
        assert!(pair.is_shut_down());
        assert_eq!(pair.next_deadline(), None);
    }

    #[test]
    fn output_taken_before_the_deadline_is_delivered() {
        let mut pair = Pair::new();
        pair.server.stalled = true;
        pair.server.conn.send_text("late but whole").unwrap();
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        pair.drive();
        pair.now += Config::default().close_timeout / 2;
        pair.server.stalled = false;
        pair.drive();
        assert!(!pair.server.conn.output_abandoned());
        assert_eq!(pair.client.messages(), vec![Message::Text("late but whole".into())]);
        assert!(pair.is_shut_down());
        assert_eq!(
            pair.client.conn.closed(),
            Some(&closed(CloseCode::NORMAL, "", CloseCause::Local))
        );
    }

    #[test]
    fn after_an_idle_timeout_output_is_given_up_without_waiting() {
        let mut config = Config::default();
        config.idle_timeout = Some(Duration::from_secs(30));
        let mut pair = Pair::with_configs(Config::default(), config);
        // The client vanished: the server hears nothing and cannot write.
        pair.client.blackhole = true;
        pair.server.stalled = true;
        pair.server.conn.send_binary(&[1; 500]).unwrap();
        let start = pair.now;
        assert!(pair.step(Duration::from_secs(60)));
        assert_eq!(pair.now - start, Duration::from_secs(30));
        assert_eq!(
            pair.server.conn.closed().map(|c| c.cause.clone()),
            Some(CloseCause::IdleTimeout)
        );
        // The deadline is the timeout's own time: the next step gives the
        // output up without time passing.
        assert_eq!(pair.server.conn.poll_timeout(), Some(pair.now));
        assert!(pair.step(Duration::ZERO));
        assert_eq!(pair.now - start, Duration::from_secs(30));
        assert!(pair.server.conn.output_abandoned());
        assert!(pair.server.transport_closed);
    }

    #[test]
    fn after_a_close_timeout_output_is_given_up_without_waiting() {
        let mut pair = Pair::new();
        // The server went silent and the client's socket is full.
        pair.client.stalled = true;
        pair.client.conn.close(CloseCode::NORMAL, "", pair.now).unwrap();
        let start = pair.now;
        assert!(pair.step(Duration::from_secs(60)));
        assert_eq!(pair.now - start, Config::default().close_timeout);
        assert_eq!(
            pair.client.conn.closed(),
            Some(&closed(CloseCode::ABNORMAL, "", CloseCause::CloseTimeout))
        );
        assert!(pair.step(Duration::ZERO));
        assert_eq!(pair.now - start, Config::default().close_timeout);
        assert!(pair.client.conn.output_abandoned());
        assert!(pair.client.transport_closed);
    }
}
