//! [`EpochStash`]: the buffer every epoch-at-a-time operator here keeps (timely 0.32 has no notificator): inputs
//! stashed by timely time with a capability for it, handed out in time order once the input frontier has passed
//! the time (so all of that epoch's data is in).

use std::collections::BTreeMap;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

/// Data stashed per epoch, with a retained capability per epoch.
pub struct EpochStash<D> {
    epochs: BTreeMap<u64, (Capability<u64>, Vec<D>)>,
}

impl<D> Default for EpochStash<D> {
    fn default() -> Self {
        EpochStash {
            epochs: BTreeMap::new(),
        }
    }
}

impl<D> EpochStash<D> {
    /// Appends `batches` at epoch `t`; `retain` gives the capability the first time `t` is seen.
    pub fn add<'a>(
        &mut self,
        t: u64,
        retain: impl FnOnce() -> Capability<u64>,
        batches: impl IntoIterator<Item = &'a mut Vec<D>>,
    ) where
        D: 'a,
    {
        let e = self
            .epochs
            .entry(t)
            .or_insert_with(|| (retain(), Vec::new()));
        for b in batches {
            e.1.append(b);
        }
    }

    /// The earliest stashed epoch if the frontier has passed it, with its capability and data.
    pub fn pop_closed(
        &mut self,
        frontier: &MutableAntichain<u64>,
    ) -> Option<(u64, Capability<u64>, Vec<D>)> {
        let (&t, _) = self.epochs.first_key_value()?;
        if frontier.less_equal(&t) {
            return None;
        }
        let (cap, data) = self.epochs.pop_first().expect("present").1;
        Some((t, cap, data))
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }
}
