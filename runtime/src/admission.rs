//! Admission control: does a new deployment fit in what this provider offers? The
//! provider's [`Limits`] (`--max-cpu`, `--max-memory`, `--max-deploys`) minus what running
//! deployments hold gives what is available; a request for more is refused with the numbers a
//! person needs ("asked 2000m CPU, 1500m available of 4000m"). Pure bookkeeping, no I/O: the
//! daemon keeps one [`Admission`] behind a lock, admits before it starts a container and
//! releases when the deployment ends (or is found dead at reconciliation).

use std::collections::HashMap;

use crate::quantity::{format_cpu, format_memory};

/// What this provider offers to all deployments together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU for all deployments together, in millicores (default 4000: four cores).
    pub max_cpu_millis: u32,
    /// Memory for all deployments together, in bytes (default 4 GiB).
    pub max_memory_bytes: u64,
    /// Number of deployments at the same time (default 10).
    pub max_deploys: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cpu_millis: 4000,
            max_memory_bytes: 4 << 30,
            max_deploys: 10,
        }
    }
}

/// What one deployment asks for (or holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// What all admitted deployments hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Sum of the CPU of the admitted deployments, in millicores.
    pub cpu_millis: u64,
    /// Sum of their memory, in bytes.
    pub memory_bytes: u64,
    /// How many they are.
    pub deploys: u32,
}

/// A refusal, with the numbers that explain it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// All deployment slots are taken.
    #[error("this provider already runs {running} of at most {max} deployments: stop one first")]
    TooManyDeploys {
        /// Deployments admitted now.
        running: u32,
        /// `--max-deploys`.
        max: u32,
    },
    /// Not enough CPU left.
    #[error(
        "asked {} CPU, {} available of {}",
        format_cpu(u64::from(*asked)),
        format_cpu(*available),
        format_cpu(u64::from(*max))
    )]
    Cpu {
        /// Millicores asked.
        asked: u32,
        /// Millicores left.
        available: u64,
        /// `--max-cpu`.
        max: u32,
    },
    /// Not enough memory left.
    #[error(
        "asked {} memory, {} available of {}",
        format_memory(*asked),
        format_memory(*available),
        format_memory(*max)
    )]
    Memory {
        /// Bytes asked.
        asked: u64,
        /// Bytes left.
        available: u64,
        /// `--max-memory`.
        max: u64,
    },
    /// The request asks for no CPU or no memory at all.
    #[error("asked {} CPU and {} memory: a deployment needs some of both", format_cpu(u64::from(.asked.cpu_millis)), format_memory(.asked.memory_bytes))]
    Empty {
        /// The request.
        asked: Resources,
    },
    /// This deployment id is already admitted.
    #[error("deployment {deployment_id} is already admitted")]
    Duplicate {
        /// The deployment id given twice.
        deployment_id: String,
    },
}

impl Limits {
    /// Checks `asked` against what `used` leaves; the first exhausted resource is reported
    /// (deployment slots, then CPU, then memory).
    pub fn check(&self, used: Usage, asked: Resources) -> Result<(), AdmissionError> {
        if asked.cpu_millis == 0 || asked.memory_bytes == 0 {
            return Err(AdmissionError::Empty { asked });
        }
        if used.deploys >= self.max_deploys {
            return Err(AdmissionError::TooManyDeploys {
                running: used.deploys,
                max: self.max_deploys,
            });
        }
        let cpu_available = u64::from(self.max_cpu_millis).saturating_sub(used.cpu_millis);
        if u64::from(asked.cpu_millis) > cpu_available {
            return Err(AdmissionError::Cpu {
                asked: asked.cpu_millis,
                available: cpu_available,
                max: self.max_cpu_millis,
            });
        }
        let memory_available = self.max_memory_bytes.saturating_sub(used.memory_bytes);
        if asked.memory_bytes > memory_available {
            return Err(AdmissionError::Memory {
                asked: asked.memory_bytes,
                available: memory_available,
                max: self.max_memory_bytes,
            });
        }
        Ok(())
    }
}

/// The provider's ledger: which deployments hold which resources.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    limits: Limits,
    held: HashMap<String, Resources>,
}

impl Admission {
    /// An empty ledger under `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            held: HashMap::new(),
        }
    }

    /// The limits this ledger enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the admitted deployments hold together.
    pub fn usage(&self) -> Usage {
        self.held.values().fold(Usage::default(), |mut sum, r| {
            sum.cpu_millis += u64::from(r.cpu_millis);
            sum.memory_bytes = sum.memory_bytes.saturating_add(r.memory_bytes);
            sum.deploys += 1;
            sum
        })
    }

    /// Admits `asked` for `deployment_id` if it fits, and records it.
    pub fn admit(&mut self, deployment_id: &str, asked: Resources) -> Result<(), AdmissionError> {
        if self.held.contains_key(deployment_id) {
            return Err(AdmissionError::Duplicate {
                deployment_id: deployment_id.to_owned(),
            });
        }
        self.limits.check(self.usage(), asked)?;
        self.held.insert(deployment_id.to_owned(), asked);
        Ok(())
    }

    /// Records a deployment found running at startup without checking the limits: it already
    /// runs, and refusing to count it would only hide it. Later admissions see it.
    pub fn adopt(&mut self, deployment_id: &str, held: Resources) {
        self.held.insert(deployment_id.to_owned(), held);
    }

    /// Frees what `deployment_id` held; returns it, or `None` if it held nothing.
    pub fn release(&mut self, deployment_id: &str) -> Option<Resources> {
        self.held.remove(deployment_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    fn ask(cpu_millis: u32, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    #[test]
    fn check_table() {
        let limits = Limits::default();
        let used = |cpu_millis, memory_bytes, deploys| Usage {
            cpu_millis,
            memory_bytes,
            deploys,
        };
        let cases: &[(Usage, Resources, Option<&str>)] = &[
            (used(0, 0, 0), ask(4000, 4 * G), None),
            (used(0, 0, 0), ask(500, 256 * M), None),
            (used(2500, G, 3), ask(1500, 3 * G), None),
            (
                used(2500, 0, 1),
                ask(2000, M),
                Some("asked 2000m CPU, 1500m available of 4000m"),
            ),
            (
                used(0, 3 * G + 512 * M, 1),
                ask(100, G),
                Some("asked 1 GiB memory, 512 MiB available of 4 GiB"),
            ),
            (
                used(0, 0, 10),
                ask(1, M),
                Some("already runs 10 of at most 10 deployments"),
            ),
            (
                used(5000, 0, 1),
                ask(1, M),
                Some("asked 1m CPU, 0m available of 4000m"),
            ),
            (used(0, 0, 0), ask(0, M), Some("needs some of both")),
            (used(0, 0, 0), ask(4001, M), Some("asked 4001m CPU")),
        ];
        for (used, asked, refusal) in cases {
            let got = limits.check(*used, *asked);
            match refusal {
                None => assert_eq!(got, Ok(()), "{used:?} {asked:?}"),
                Some(text) => {
                    let err = got.expect_err("should be refused");
                    assert!(err.to_string().contains(text), "{err} should say {text}");
                }
            }
        }
    }

    #[test]
    fn ledger_admits_until_full_and_release_frees() {
        let mut ledger = Admission::new(Limits {
            max_cpu_millis: 1000,
            max_memory_bytes: G,
            max_deploys: 2,
        });
        ledger.admit("a", ask(600, 512 * M)).expect("fits");
        let err = ledger.admit("b", ask(600, M)).expect_err("cpu exhausted");
        assert_eq!(err.to_string(), "asked 600m CPU, 400m available of 1000m");
        assert!(matches!(
            ledger.admit("a", ask(1, M)),
            Err(AdmissionError::Duplicate { .. })
        ));
        ledger.admit("b", ask(400, 512 * M)).expect("fits exactly");
        assert!(matches!(
            ledger.admit("c", ask(1, 1)),
            Err(AdmissionError::TooManyDeploys { running: 2, max: 2 })
        ));
        assert_eq!(
            ledger.usage(),
            Usage {
                cpu_millis: 1000,
                memory_bytes: G,
                deploys: 2
            }
        );
        assert_eq!(ledger.release("a"), Some(ask(600, 512 * M)));
        assert_eq!(ledger.release("a"), None);
        ledger
            .admit("c", ask(600, 512 * M))
            .expect("freed by release");
    }

    #[test]
    fn adopted_deployments_count_even_over_the_limits() {
        let mut ledger = Admission::new(Limits {
            max_cpu_millis: 1000,
            max_memory_bytes: G,
            max_deploys: 5,
        });
        ledger.adopt("old", ask(1500, M));
        let err = ledger.admit("new", ask(1, M)).expect_err("nothing left");
        assert_eq!(err.to_string(), "asked 1m CPU, 0m available of 1000m");
    }
}
