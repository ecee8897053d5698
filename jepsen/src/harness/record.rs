//! The history recorder: every operation is recorded at invocation and at completion, with
//! monotonic nanoseconds since the run began. Times are taken under the recorder's lock, so
//! events are stored in time order (the history format requires it).

use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::history::{Event, EventType, Function};

pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run began.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, process: u64, kind: EventType, f: Function, key: &str, value: Value) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let time = self.now_ns();
        events.push(Event {
            process,
            kind,
            f,
            key: Some(key.to_string()),
            value,
            time,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
