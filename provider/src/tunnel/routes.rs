//! What a registration answers when the provider keeps a link to several gateways: a pure
//! book of the registrations still waiting for their answer, fed with each link's answer and
//! state, telling the fan-out whom to answer what. No I/O, no clock: table-tested below.
//!
//! The rules:
//! - **The first gateway that accepts gives the URL.** All gateways of a domain give the same
//!   URL; the first answer is the fastest one to hand back, and the others keep publishing it.
//! - **`Refused` only when every connected gateway refused with a final code** (name taken,
//!   bad name, ...). A link that is not connected does not hold the answer up — a deploy
//!   should not wait hours for a gateway that is down — and the name is then withdrawn from
//!   the links still holding it offline, so it cannot appear later behind the caller's back.
//!   The refusal keeps the first refusing gateway's code; its reason names every gateway that
//!   refused (with one gateway, the reason is the gateway's, word for word).
//! - **`TryLater`** never reaches this book: the link keeps the name desired and registers it
//!   again ([`super::session`]), so the caller keeps waiting for an accept.
//! - **A gateway operator's release** (`Refused{OPERATOR_RELEASE}` after the name was
//!   accepted) drops the name **at that gateway only**: each link keeps its own set of desired
//!   names, so the other gateways keep serving it until they are released too. Gateways
//!   without a shared store are independent operators, and one of them must not be able to
//!   take an app off the others; in cluster mode the release reaches every gateway through its
//!   watch, so "all released" is what happens there anyway.
//! - A link that stopped for good (shutdown, wrong pinned key) neither holds an answer up nor
//!   refuses; when every link stopped, the waiters get `Stopped`.

use std::collections::BTreeMap;

use super::RegisterError;

/// A link's index, in the order of the gateways.
pub(crate) type LinkId = usize;

/// What one gateway said about a waiting name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Nothing,
    Refused(RegisterError),
}

/// A link's connection, as far as this book cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LinkState {
    #[default]
    Offline,
    Connected,
    /// Stopped for good.
    Stopped,
}

/// The outcome of an event: callers to answer, and names to withdraw from some links.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Settled<W> {
    pub(crate) answers: Vec<(W, Result<String, RegisterError>)>,
    /// A name refused everywhere it was heard, to withdraw from these links (those that did
    /// not refuse it, and would otherwise publish it once they connect).
    pub(crate) withdraw: Vec<(String, Vec<LinkId>)>,
}

impl<W> Default for Settled<W> {
    fn default() -> Self {
        Self {
            answers: Vec::new(),
            withdraw: Vec::new(),
        }
    }
}

struct Waiting<W> {
    said: Vec<Said>,
    waiters: Vec<W>,
}

/// Registrations waiting for their answer (`W`: whatever answers a caller).
pub(crate) struct RouteBook<W> {
    /// Each gateway's name, for the refusal's reason.
    gateways: Vec<String>,
    links: Vec<LinkState>,
    waiting: BTreeMap<String, Waiting<W>>,
}

impl<W> RouteBook<W> {
    /// A book for links to `gateways` (their names as shown to people), all offline.
    pub(crate) fn new(gateways: Vec<String>) -> Self {
        Self {
            links: vec![LinkState::Offline; gateways.len()],
            gateways,
            waiting: BTreeMap::new(),
        }
    }

    /// A caller waits for `name`'s URL; the fan-out sends the registration to every link.
    pub(crate) fn register(&mut self, name: &str, waiter: W) -> Settled<W> {
        let links = self.links.len();
        self.waiting
            .entry(name.to_owned())
            .or_insert_with(|| Waiting {
                said: vec![Said::Nothing; links],
                waiters: Vec::new(),
            })
            .waiters
            .push(waiter);
        self.settle_one(name)
    }

    /// The name is withdrawn: whoever waits for it gets `Withdrawn`.
    pub(crate) fn unregister(&mut self, name: &str) -> Settled<W> {
        let answers = self
            .waiting
            .remove(name)
            .map(|w| w.waiters)
            .unwrap_or_default()
            .into_iter()
            .map(|w| {
                let e = RegisterError::Withdrawn {
                    name: name.to_owned(),
                };
                (w, Err(e))
            })
            .collect();
        Settled {
            answers,
            withdraw: Vec::new(),
        }
    }

    /// Link `link` answered a registration of `name`.
    pub(crate) fn answer(
        &mut self,
        link: LinkId,
        name: &str,
        result: Result<String, RegisterError>,
    ) -> Settled<W> {
        match result {
            Ok(url) => {
                let waiters = self.waiting.remove(name).map(|w| w.waiters);
                Settled {
                    answers: waiters
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| (w, Ok(url.clone())))
                        .collect(),
                    withdraw: Vec::new(),
                }
            }
            Err(e @ RegisterError::Refused { .. }) => {
                if let Some(said) = self
                    .waiting
                    .get_mut(name)
                    .and_then(|w| w.said.get_mut(link))
                {
                    *said = Said::Refused(e);
                }
                self.settle_one(name)
            }
            Err(RegisterError::Stopped) => self.link_state(link, LinkState::Stopped),
            // The answer to a registration withdrawn since; a newer one may be waiting.
            Err(RegisterError::Withdrawn { .. }) => Settled::default(),
        }
    }

    /// Link `link` connected, went offline or stopped: waiting names may settle.
    pub(crate) fn link_state(&mut self, link: LinkId, state: LinkState) -> Settled<W> {
        match self.links.get_mut(link) {
            Some(s) if *s != state => *s = state,
            _ => return Settled::default(),
        }
        let names: Vec<String> = self.waiting.keys().cloned().collect();
        let mut all = Settled::default();
        for name in names {
            let one = self.settle_one(&name);
            all.answers.extend(one.answers);
            all.withdraw.extend(one.withdraw);
        }
        all
    }

    /// Everything stops: every waiter gets `Stopped`.
    pub(crate) fn stop(&mut self) -> Vec<(W, Result<String, RegisterError>)> {
        std::mem::take(&mut self.waiting)
            .into_values()
            .flat_map(|w| w.waiters)
            .map(|w| (w, Err(RegisterError::Stopped)))
            .collect()
    }

    /// Answers `name`'s waiters if its links' answers and states decide it.
    fn settle_one(&mut self, name: &str) -> Settled<W> {
        let Some(waiting) = self.waiting.get(name) else {
            return Settled::default();
        };
        let refused: Vec<(LinkId, &RegisterError)> = waiting
            .said
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Said::Refused(e) => Some((i, e)),
                Said::Nothing => None,
            })
            .collect();
        let connected_silent = waiting
            .said
            .iter()
            .zip(&self.links)
            .any(|(s, l)| *s == Said::Nothing && *l == LinkState::Connected);
        let all_stopped = self.links.iter().all(|l| *l == LinkState::Stopped);
        let verdict = match refused.first() {
            Some(_) if connected_silent => return Settled::default(),
            Some((_, first)) => Err(self.refusal(name, first, &refused)),
            None if all_stopped => Err(RegisterError::Stopped),
            None => return Settled::default(),
        };
        let withdraw = if refused.is_empty() {
            Vec::new()
        } else {
            let silent: Vec<LinkId> = waiting
                .said
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == Said::Nothing)
                .map(|(i, _)| i)
                .collect();
            if silent.is_empty() {
                Vec::new()
            } else {
                vec![(name.to_owned(), silent)]
            }
        };
        let waiters = self.waiting.remove(name).map(|w| w.waiters);
        Settled {
            answers: waiters
                .unwrap_or_default()
                .into_iter()
                .map(|w| (w, verdict.clone()))
                .collect(),
            withdraw,
        }
    }

    /// The refusal a caller sees: with one gateway its own; with several, the first code and
    /// every refusing gateway's reason.
    fn refusal(
        &self,
        name: &str,
        first: &RegisterError,
        refused: &[(LinkId, &RegisterError)],
    ) -> RegisterError {
        if self.gateways.len() == 1 {
            return first.clone();
        }
        let code = match first {
            RegisterError::Refused { code, .. } => *code,
            _ => peercompute_tunnel_proto::RefuseCode::TryLater,
        };
        let reason = refused
            .iter()
            .map(|(i, e)| {
                let why = match e {
                    RegisterError::Refused { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let at = self.gateways.get(*i).map_or("?", String::as_str);
                format!("{at}: {why}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        RegisterError::Refused {
            name: name.to_owned(),
            code,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
