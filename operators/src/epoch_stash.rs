//! [`EpochStash`]: the buffer every epoch-at-a-time operator here keeps (timely 0.32 has no notificator): inputs
//! stashed by timely time with a capability for it, handed out in time order once the input frontier has passed
//! the time (so all of that epoch's data is in).
//!
//! An epoch's batches are kept as they came (taken from timely's buffers, not appended into one vector): appending
//! copied every item once more and regrew the vector to the epoch's size, page by fresh page (a twentieth of the
//! trainer's time in the end-to-end benchmark).

use std::collections::BTreeMap;
use std::iter::Flatten;
use std::vec;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

/// Data stashed per epoch, with a retained capability per epoch.
pub struct EpochStash<D> {
    epochs: BTreeMap<u64, (Capability<u64>, Vec<Vec<D>>)>,
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
        e.1.extend(
            batches
                .into_iter()
                .filter(|b| !b.is_empty())
                .map(std::mem::take),
        );
    }

    /// The earliest stashed epoch if the frontier has passed it, with its capability and data (in arrival order).
    #[allow(clippy::type_complexity)]
    pub fn pop_closed(
        &mut self,
        frontier: &MutableAntichain<u64>,
    ) -> Option<(u64, Capability<u64>, Flatten<vec::IntoIter<Vec<D>>>)> {
        let (&t, _) = self.epochs.first_key_value()?;
        if frontier.less_equal(&t) {
            return None;
        }
        let (cap, data) = self.epochs.pop_first().expect("present").1;
        Some((t, cap, data.into_iter().flatten()))
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }
}
