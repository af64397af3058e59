//! The Engine.IO v4 heartbeat as a pure state machine: time is passed in, deadlines come out.
//!
//! The server pings every `ping_interval`; when a ping is sent a `ping_timeout` deadline starts; a
//! pong clears it and re-arms the next ping `ping_interval` later (the reference's timers). A client
//! that never answers is dropped `ping_interval + ping_timeout` after open.

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

/// Heartbeat timers of one session.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
}

impl Heartbeat {
    /// Timers for a session opened at `now`.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            next_ping: now + interval,
            pong_deadline: None,
        }
    }

    /// When [`Heartbeat::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        self.pong_deadline.unwrap_or(self.next_ping)
    }

    /// Advances the timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Action {
        match self.pong_deadline {
            Some(deadline) if now >= deadline => Action::TimedOut,
            Some(_) => Action::Wait,
            None if now >= self.next_ping => {
                // Counted from when the ping was due, so a late timer does not stretch the timeout.
                self.pong_deadline = Some(self.next_ping + self.timeout);
                Action::SendPing
            }
            None => Action::Wait,
        }
    }

    /// A pong arrived at `now`.
    pub fn handle_pong(&mut self, now: Instant) {
        if self.pong_deadline.take().is_some() {
            self.next_ping = now + self.interval;
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
}
