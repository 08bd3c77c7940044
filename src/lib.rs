//! temponet core library: the flow record, every flow file format, and (in later modules) the generative models,
//! the simulator and the fidelity metrics. It knows nothing of timely or Kafka: the `operators` crate wraps it.
//!
//! A record's path: [`format`] (files) -> [`record::FlowRecord`] -> operators -> model -> metrics -> sink;
//! [`drift`] watches the model's losses and the real flows' marginals on the way.

pub mod drift;
pub mod format;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod record;
pub mod sim;

pub use record::{FlowRecord, HostPair, TcpFlags};
