//! passThru: arbitrary client JSON carried with a transaction and merged with server keys
//! (LNPay spec §10). Stored as JSON object text.

use serde_json::{Map, Value};

/// A passThru object under construction.
#[derive(Debug, Clone, Default)]
pub struct PassThru(Map<String, Value>);

impl PassThru {
    /// Starts from the client's object (or empty).
    pub fn from_user(user: Option<Map<String, Value>>) -> PassThru {
        PassThru(user.unwrap_or_default())
    }

    /// Starts with server keys first, then the client's keys (server keys win on conflict).
    pub fn server_first(server: &[(&str, Value)], user: Option<Map<String, Value>>) -> PassThru {
        let mut m = Map::new();
        for (k, v) in server {
            m.insert((*k).to_owned(), v.clone());
        }
        for (k, v) in user.unwrap_or_default() {
            if !m.contains_key(&k) {
                m.insert(k, v);
            }
        }
        PassThru(m)
    }

    /// Sets a server key (overrides the client's).
    pub fn set(mut self, k: &str, v: Value) -> PassThru {
        self.0.insert(k.to_owned(), v);
        self
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}
