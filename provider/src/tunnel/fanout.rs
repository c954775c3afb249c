//! The task behind [`super::TunnelHandle`]: it hands every route command to each gateway's
//! link, answers registrations as [`super::routes`] decides, and folds the links' statuses
//! and p2p announcements into the one status and meeting point the daemon reads
//! ([`aggregate`], [`pick_p2p`]). With one gateway it is a pass-through: the same answers,
//! the same status.

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::routes::{LinkId, LinkState, RouteBook, Settled};
use super::{Command, GatewayP2p, RegisterError, TunnelStatus};

/// A caller waiting for a URL.
type Waiter = oneshot::Sender<Result<String, RegisterError>>;

/// One link's ends, as the fan-out holds them.
pub(super) struct LinkIo {
    /// The gateway as people know it (`gw.example.com:8443`), for refusals naming it.
    pub(super) name: String,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) status: watch::Receiver<TunnelStatus>,
    pub(super) p2p: watch::Receiver<Option<GatewayP2p>>,
}

/// The one status of several links: the first connected link's while any is connected;
/// otherwise the first link's that is still trying (connecting, or refused and retrying);
/// when all stopped for good, the first wrong-gateway finding, else `Stopped`. With one link,
/// that link's status.
pub(super) fn aggregate(links: &[TunnelStatus]) -> TunnelStatus {
    let first = |pred: fn(&TunnelStatus) -> bool| links.iter().find(|s| pred(s)).cloned();
    first(|s| matches!(s, TunnelStatus::Connected { .. }))
        .or_else(|| first(|s| !s.is_final()))
        .or_else(|| first(|s| matches!(s, TunnelStatus::WrongGateway { .. })))
        .unwrap_or(TunnelStatus::Stopped)
}

/// Which link's p2p meeting point the daemon uses: the current one while it still announces
/// one (the relay keeper keeps its slot), else the first link, in gateway order, that
/// announces one.
pub(super) fn pick_p2p(current: Option<LinkId>, announced: &[bool]) -> Option<LinkId> {
    current
        .filter(|i| announced.get(*i).copied().unwrap_or(false))
        .or_else(|| announced.iter().position(|a| *a))
}

/// Runs until every link task ended (`tasks`); dropping it (an abort) aborts the links.
pub(super) async fn run(
    links: Vec<LinkIo>,
    mut tasks: JoinSet<()>,
    mut commands: mpsc::Receiver<Command>,
    (status, p2p): (
        watch::Sender<TunnelStatus>,
        watch::Sender<Option<GatewayP2p>>,
    ),
) {
    let names = links.iter().map(|l| l.name.clone()).collect();
    let mut fan = Fan {
        book: RouteBook::new(names),
        links,
        status,
        p2p,
        p2p_from: None,
    };
    // A link's status or p2p changed: a tick (a full channel already holds one; `refresh`
    // reads the latest values).
    let (tick, mut ticks) = mpsc::channel::<()>(1);
    let mut watchers = JoinSet::new();
    for link in &fan.links {
        let (mut s, mut p, tick) = (link.status.clone(), link.p2p.clone(), tick.clone());
        watchers.spawn(async move {
            loop {
                tokio::select! {
                    r = s.changed() => if r.is_err() { break },
                    r = p.changed() => if r.is_err() { break },
                }
                let _ = tick.try_send(());
            }
        });
    }
    drop(tick);
    let mut answers: JoinSet<(LinkId, String, Result<String, RegisterError>)> = JoinSet::new();
    let mut open = true;
    fan.refresh().await;
    loop {
        tokio::select! {
            cmd = commands.recv(), if open => match cmd {
                Some(cmd) => fan.command(cmd, &mut answers).await,
                None => open = false,
            },
            Some(Ok((link, name, result))) = answers.join_next(), if !answers.is_empty() => {
                // The link published its status before it answered: show it first.
                fan.refresh().await;
                let settled = fan.book.answer(link, &name, result);
                fan.deliver(settled).await;
            }
            Some(()) = ticks.recv() => fan.refresh().await,
            done = tasks.join_next() => if done.is_none() || tasks.is_empty() { break },
        }
    }
    fan.refresh().await;
    for (waiter, result) in fan.book.stop() {
        let _ = waiter.send(result);
    }
    watchers.abort_all();
}

struct Fan {
    book: RouteBook<Waiter>,
    links: Vec<LinkIo>,
    status: watch::Sender<TunnelStatus>,
    p2p: watch::Sender<Option<GatewayP2p>>,
    p2p_from: Option<LinkId>,
}

impl Fan {
    /// Hands `cmd` to every link; a registration's answers come back through `answers`.
    async fn command(
        &mut self,
        cmd: Command,
        answers: &mut JoinSet<(LinkId, String, Result<String, RegisterError>)>,
    ) {
        match cmd {
            Command::Register {
                name,
                target,
                reply,
            } => {
                let settled = self.book.register(&name, reply);
                self.deliver(settled).await;
                for (i, link) in self.links.iter().enumerate() {
                    let (tx, rx) = oneshot::channel();
                    let cmd = Command::Register {
                        name: name.clone(),
                        target: target.clone(),
                        reply: tx,
                    };
                    let name = name.clone();
                    if link.commands.send(cmd).await.is_err() {
                        answers.spawn(async move { (i, name, Err(RegisterError::Stopped)) });
                        continue;
                    }
                    answers.spawn(async move {
                        let result = rx.await.unwrap_or(Err(RegisterError::Stopped));
                        (i, name, result)
                    });
                }
            }
            Command::Unregister { name } => {
                let settled = self.book.unregister(&name);
                self.deliver(settled).await;
                self.withdraw(&name, 0..self.links.len()).await;
            }
        }
    }

    async fn withdraw(&self, name: &str, from: impl IntoIterator<Item = LinkId>) {
        for i in from {
            if let Some(link) = self.links.get(i) {
                let cmd = Command::Unregister {
                    name: name.to_owned(),
                };
                let _ = link.commands.send(cmd).await;
            }
        }
    }

    async fn deliver(&mut self, settled: Settled<Waiter>) {
        for (waiter, result) in settled.answers {
            let _ = waiter.send(result);
        }
        for (name, links) in settled.withdraw {
            self.withdraw(&name, links).await;
        }
    }

    /// Reads every link's status and p2p now: publishes the aggregate, tells the book which
    /// links are connected, and answers what that settles.
    async fn refresh(&mut self) {
        let now: Vec<TunnelStatus> = self
            .links
            .iter()
            .map(|l| l.status.borrow().clone())
            .collect();
        let one = aggregate(&now);
        self.status.send_if_modified(|old| {
            let changed = *old != one;
            *old = one;
            changed
        });
        let announced: Vec<bool> = self
            .links
            .iter()
            .map(|l| l.p2p.borrow().is_some())
            .collect();
        self.p2p_from = pick_p2p(self.p2p_from, &announced);
        let meeting = self
            .p2p_from
            .and_then(|i| self.links.get(i))
            .and_then(|l| l.p2p.borrow().clone());
        self.p2p.send_if_modified(|old| {
            let changed = *old != meeting;
            *old = meeting;
            changed
        });
        for (i, s) in now.iter().enumerate() {
            let state = match s {
                TunnelStatus::Connected { .. } => LinkState::Connected,
                s if s.is_final() => LinkState::Stopped,
                _ => LinkState::Offline,
            };
            let settled = self.book.link_state(i, state);
            self.deliver(settled).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(port: u16, session: u64) -> TunnelStatus {
        TunnelStatus::Connected {
            gateway: ([127, 0, 0, 1], port).into(),
            session,
            registered: 0,
            transport: super::super::Transport::Quic,
        }
    }

    #[test]
    fn the_aggregate_status() {
        let refused = TunnelStatus::Refused {
            reason: "not allowed".into(),
        };
        let id = || {
            peercompute_identity::Identity::generate()
                .expect("id")
                .peer_id()
        };
        let wrong = TunnelStatus::WrongGateway {
            expected: id(),
            presented: id(),
        };
        use TunnelStatus::{Connecting, Stopped};
        let cases = vec![
            ("one link: itself", vec![connected(1, 3)], connected(1, 3)),
            ("one link connecting", vec![Connecting], Connecting),
            ("one link stopped", vec![Stopped], Stopped),
            ("one wrong gateway", vec![wrong.clone()], wrong.clone()),
            (
                "the first connected one",
                vec![Connecting, connected(2, 1), connected(3, 1)],
                connected(2, 1),
            ),
            (
                "none connected: the first still trying",
                vec![wrong.clone(), refused.clone(), Connecting],
                refused.clone(),
            ),
            (
                "all final: the wrong gateway",
                vec![Stopped, wrong.clone()],
                wrong.clone(),
            ),
            ("all stopped", vec![Stopped, Stopped], Stopped),
        ];
        for (what, links, want) in cases {
            assert_eq!(aggregate(&links), want, "{what}");
        }
    }

    #[test]
    fn the_p2p_meeting_point_sticks_while_announced() {
        let cases = [
            (None, vec![false, false], None),
            (None, vec![false, true, true], Some(1)),
            (Some(2), vec![true, true, true], Some(2)),
            (Some(2), vec![true, true, false], Some(0)),
            (Some(5), vec![false], None),
        ];
        for (current, announced, want) in cases {
            assert_eq!(
                pick_p2p(current, &announced),
                want,
                "{current:?} {announced:?}"
            );
        }
    }
}
