//! The Engine.IO v4 heartbeat as a pure state machine: time is passed in, deadlines come out.
//!
//! The server pings every `ping_interval`; when a ping is sent a `ping_timeout` deadline starts; a
//! pong clears it and re-arms the next ping `ping_interval` later (the reference's timers). A client
//! that never answers is dropped `ping_interval + ping_timeout` after open.
//!
//! In Engine.IO v3 the direction is reversed: the client pings, the server answers, and a session is
//! dropped when no ping came for `ping_interval + ping_timeout` (the reference's v3 timer, restarted
//! by each ping).

use std::time::Duration;
use tokio::time::Instant;

/// What the driver must do after a timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a ping (`2`) now.
    SendPing,
    /// The pong did not come in time: close the session with reason "ping timeout".
    TimedOut,
    /// Nothing is due yet.
    Wait,
}

/// Who pings whom.
#[derive(Debug, Clone)]
enum Direction {
    /// v4: the server pings at `next_ping`; after a ping, the pong is due by `pong_deadline`.
    ServerPings {
        next_ping: Instant,
        pong_deadline: Option<Instant>,
    },
    /// v3: the client's next ping is due by `deadline`.
    ClientPings { deadline: Instant },
}

/// Heartbeat timers of one session.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    direction: Direction,
}

impl Heartbeat {
    /// Timers for a v4 session (the server pings) opened at `now`.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            direction: Direction::ServerPings {
                next_ping: now + interval,
                pong_deadline: None,
            },
        }
    }

    /// Timers for a v3 session (the client pings) opened at `now`.
    pub fn client_pings(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            direction: Direction::ClientPings {
                deadline: now + interval + timeout,
            },
        }
    }

    /// When [`Heartbeat::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        match self.direction {
            Direction::ServerPings {
                next_ping,
                pong_deadline,
            } => pong_deadline.unwrap_or(next_ping),
            Direction::ClientPings { deadline } => deadline,
        }
    }

    /// Advances the timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Action {
        match &mut self.direction {
            Direction::ServerPings {
                pong_deadline: Some(deadline),
                ..
            }
            | Direction::ClientPings { deadline }
                if now >= *deadline =>
            {
                Action::TimedOut
            }
            Direction::ServerPings {
                next_ping,
                pong_deadline: pong_deadline @ None,
            } if now >= *next_ping => {
                // Counted from when the ping was due, so a late timer does not stretch the timeout.
                *pong_deadline = Some(*next_ping + self.timeout);
                Action::SendPing
            }
            _ => Action::Wait,
        }
    }

    /// A pong arrived at `now` (v4).
    pub fn handle_pong(&mut self, now: Instant) {
        if let Direction::ServerPings {
            next_ping,
            pong_deadline,
        } = &mut self.direction
        {
            if pong_deadline.take().is_some() {
                *next_ping = now + self.interval;
            }
        }
    }

    /// A ping from the client arrived at `now` (v3): the next one is due a full
    /// `ping_interval + ping_timeout` later.
    pub fn handle_ping(&mut self, now: Instant) {
        if let Direction::ClientPings { deadline } = &mut self.direction {
            *deadline = now + self.interval + self.timeout;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_then_times_out_without_pong() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut hb = Heartbeat::new(t0, ms(300), ms(200));
        assert_eq!(hb.poll_timeout(), t0 + ms(300));
        assert_eq!(hb.handle_timeout(t0 + ms(100)), Action::Wait);
        assert_eq!(hb.handle_timeout(t0 + ms(300)), Action::SendPing);
        assert_eq!(hb.poll_timeout(), t0 + ms(500));
        assert_eq!(hb.handle_timeout(t0 + ms(400)), Action::Wait);
        assert_eq!(hb.handle_timeout(t0 + ms(500)), Action::TimedOut);
    }

    #[test]
    fn pong_rearms_the_next_ping() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut hb = Heartbeat::new(t0, ms(300), ms(200));
        assert_eq!(hb.handle_timeout(t0 + ms(300)), Action::SendPing);
        hb.handle_pong(t0 + ms(350));
        assert_eq!(hb.poll_timeout(), t0 + ms(650));
        assert_eq!(hb.handle_timeout(t0 + ms(600)), Action::Wait);
        assert_eq!(hb.handle_timeout(t0 + ms(650)), Action::SendPing);
        // An unsolicited pong does not move the schedule.
        let mut hb = Heartbeat::new(t0, ms(300), ms(200));
        hb.handle_pong(t0 + ms(10));
        assert_eq!(hb.poll_timeout(), t0 + ms(300));
    }

    #[test]
    fn client_pings_rearm_the_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut hb = Heartbeat::client_pings(t0, ms(300), ms(200));
        assert_eq!(hb.poll_timeout(), t0 + ms(500));
        assert_eq!(hb.handle_timeout(t0 + ms(400)), Action::Wait);
        hb.handle_ping(t0 + ms(450));
        assert_eq!(hb.poll_timeout(), t0 + ms(950));
        // A pong is not this direction's business: nothing moves.
        hb.handle_pong(t0 + ms(900));
        assert_eq!(hb.handle_timeout(t0 + ms(949)), Action::Wait);
        assert_eq!(hb.handle_timeout(t0 + ms(950)), Action::TimedOut);
        // The server never pings.
        assert_eq!(hb.handle_timeout(t0 + ms(10_000)), Action::TimedOut);
    }
}
