//! The built-in network simulator: traffic with known structure and known truth, of any size.
//!
//! A user with no flow data yet, the tests and the benchmarks all need realistic traffic whose properties are
//! known exactly. The simulator draws it from a [`Scenario`] (every parameter in one documented TOML file,
//! `scenarios/enterprise.toml`):
//!
//! - hosts with roles and realistic private/public IPv4 and IPv6 addresses ([`network`]);
//! - services with their own protocol, ports, flags, packet/byte/duration distributions ([`flowgen`]);
//! - diurnal and weekly seasonality, heavy-tailed gaps, Hawkes self-exciting bursts and host-pair persistence
//!   ([`timing`], [`background`]);
//! - optional labelled attacks on top ([`attacks`]) and an optional regime change to a second scenario at a
//!   given time, for drift tests.
//!
//! [`Simulator`] is a streaming `Iterator<Item = FlowRecord>`: records come in non-decreasing `start_us`
//! (microseconds since the epoch, UTC; the flow's first packet), memory stays bounded by hosts + pending bursts,
//! and the output is a pure function of ([`SimConfig`], crate versions): every random draw comes from
//! `ChaCha8Rng` (rand_chacha, whose output is documented stable across versions and platforms), seeded from
//! `seed` with one stream per component. Background flows are labelled `benign`, attack flows with their
//! attack's name. Every flow satisfies the validity rules listed in [`flowgen`].

pub mod attacks;
pub mod background;
pub mod dist;
pub mod flowgen;
pub mod network;
pub mod scenario;
pub mod timing;

pub use scenario::{AttackKind, Scenario};

use crate::record::FlowRecord;
use attacks::Attacks;
use background::Background;
use network::Network;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Errors building a simulation (bad scenario, impossible settings).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("settings: {0}")]
    Settings(String),
}

/// A switch to another scenario at a given time (drift tests). The second scenario gets the same `--hosts`
/// number; with the same address plan its hosts have the same addresses.
#[derive(Clone, Debug)]
pub struct RegimeChange {
    /// Time of the switch, microseconds after the simulation's start.
    pub after_us: i64,
    pub scenario: Scenario,
}

/// Everything a simulation depends on.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub scenario: Scenario,
    /// The `--hosts` scale: each role gets max(min_count, round(share * hosts)) hosts.
    pub hosts: usize,
    /// Start of the simulated window, microseconds since the epoch (UTC).
    pub start_us: i64,
    /// Length of the window in microseconds; no flow starts at or after `start_us + span_us`.
    pub span_us: i64,
    pub seed: u64,
    /// Attacks to inject (each needs its parameters in the scenario).
    pub attacks: Vec<AttackKind>,
    pub regime_change: Option<RegimeChange>,
}

impl SimConfig {
    /// The embedded `enterprise` scenario, no attacks, no regime change.
    pub fn enterprise(hosts: usize, start_us: i64, span_us: i64, seed: u64) -> SimConfig {
        SimConfig {
            scenario: Scenario::named("enterprise").expect("the embedded scenario is valid"),
            hosts,
            start_us,
            span_us,
            seed,
            attacks: Vec::new(),
            regime_change: None,
        }
    }
}

// Random streams of one seed, one per component, so adding draws to one never shifts another.
const STREAM_NETWORK: u64 = 1;
const STREAM_BACKGROUND: u64 = 2;
const STREAM_ATTACKS: u64 = 3;
const STREAM_SECOND_BACKGROUND: u64 = 4;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// A time-ordered merge of the background stream(s) and the attacks. See the module documentation.
pub struct Simulator {
    network: Arc<Network>,
    second_network: Option<Arc<Network>>,
    sources: Vec<Box<dyn Iterator<Item = FlowRecord> + Send>>,
    heads: Vec<Option<FlowRecord>>,
    start_us: i64,
    end_us: i64,
    emitted: u64,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Result<Simulator, SimError> {
        if cfg.hosts == 0 {
            return Err(SimError::Settings("--hosts must be at least 1".into()));
        }
        if cfg.span_us <= 0 {
            return Err(SimError::Settings("the span must be positive".into()));
        }
        let end_us = cfg
            .start_us
            .checked_add(cfg.span_us)
            .ok_or_else(|| SimError::Settings("span too long".into()))?;
        cfg.scenario.validate().map_err(SimError::Scenario)?;
        let network = Arc::new(Network::build(
            &cfg.scenario,
            cfg.hosts,
            &mut rng(cfg.seed, STREAM_NETWORK),
        )?);
        let switch_us = match &cfg.regime_change {
            Some(rc) if rc.after_us <= 0 || rc.after_us >= cfg.span_us => {
                return Err(SimError::Settings(
                    "the regime change must fall strictly inside the span".into(),
                ));
            }
            Some(rc) => cfg.start_us + rc.after_us,
            None => end_us,
        };
        let mut sources: Vec<Box<dyn Iterator<Item = FlowRecord> + Send>> = Vec::new();
        sources.push(Box::new(Background::new(
            &cfg.scenario,
            network.clone(),
            cfg.start_us,
            switch_us,
            rng(cfg.seed, STREAM_BACKGROUND),
        )));
        let mut second_network = None;
        if let Some(rc) = &cfg.regime_change {
            rc.scenario.validate().map_err(SimError::Scenario)?;
            let net2 = Arc::new(Network::build(
                &rc.scenario,
                cfg.hosts,
                &mut rng(cfg.seed, STREAM_NETWORK),
            )?);
            sources.push(Box::new(Background::new(
                &rc.scenario,
                net2.clone(),
                switch_us,
                end_us,
                rng(cfg.seed, STREAM_SECOND_BACKGROUND),
            )));
            second_network = Some(net2);
        }
        let attacks = Attacks::new(
            &cfg.attacks,
            &cfg.scenario.attacks,
            &network,
            cfg.start_us,
            end_us,
            rng(cfg.seed, STREAM_ATTACKS),
        )?;
        sources.push(Box::new(attacks));
        let heads = sources.iter_mut().map(|s| s.next()).collect();
        Ok(Simulator {
            network,
            second_network,
            sources,
            heads,
            start_us: cfg.start_us,
            end_us,
            emitted: 0,
        })
    }

    /// The simulated hosts (of the first scenario).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The hosts of the second scenario, when there is a regime change.
    pub fn second_network(&self) -> Option<&Network> {
        self.second_network.as_deref()
    }

    /// The simulated window `[start, end)`, microseconds since the epoch.
    pub fn window(&self) -> (i64, i64) {
        (self.start_us, self.end_us)
    }

    /// Flows emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }
}

impl Iterator for Simulator {
    type Item = FlowRecord;

    fn next(&mut self) -> Option<FlowRecord> {
        // Earliest head; ties go to the lower source index (first background, second, attacks): deterministic.
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(r) = h
                && best.is_none_or(|b| {
                    r.start_us < self.heads[b].as_ref().expect("best has a head").start_us
                })
            {
                best = Some(i);
            }
        }
        let i = best?;
        let next = self.sources[i].next();
        let out = std::mem::replace(&mut self.heads[i], next);
        self.emitted += 1;
        out
    }
}
