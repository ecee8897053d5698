//! Histories: the pinned JSON-lines event format (design §8) shared by the checker and the
//! harness. Parsers for other formats live beside it.

mod event;

pub use event::{Event, EventType, Function};
