//! Histories: the pinned JSON-lines event format (design §8) shared by the checker and the
//! harness, readers for the Jepsen/Knossos/Porcupine formats the checker is validated against,
//! and the pairing of events into operations.

pub mod edn;
mod event;
pub mod ops;

pub use event::{Event, EventType, Function};
pub use ops::{Format, History, HistoryError, Operation};
