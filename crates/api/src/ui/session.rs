//! Account-page sessions and CSRF tokens.
//!
//! A session is a random 256-bit id in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`,
//! `Secure` when `public_url` is https); the server keeps only its SHA-256, with the account,
//! the session's CSRF token and an expiry. Sessions live in memory: a restart logs everyone out
//! (nothing about them is persisted, so nothing needs migrating; logging in again is the cost).
//!
//! CSRF: every form carries the session's token (synchronizer token), compared in constant time.
//! The login form, before any session exists, uses a double-submit token: a random value in a
//! short-lived `SameSite=Strict` cookie that the form must repeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use rand::RngCore as _;
use satchel_domain::AccountId;
use sha2::{Digest, Sha256};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "satchel_session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "satchel_login_csrf";
/// How long a session lasts after login (no sliding renewal).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a login form may wait before it is submitted.
pub const LOGIN_FORM_TTL_SECS: u64 = 3600;
/// Sessions kept at most; past this, expired ones are dropped and then the oldest.
const MAX_SESSIONS: usize = 10_000;

/// 256 random bits as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whose.
    pub account_id: AccountId,
    /// The token every form of this session repeats.
    pub csrf: String,
    expires: Instant,
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session; returns its cookie value.
    pub fn create(&self, account_id: AccountId) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| s.expires > now);
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            digest(&id),
            Session {
                account_id,
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The live session named by the request's cookie.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let key = digest(&id);
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                m.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session named by the request's cookie.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest(&id));
        }
    }
}

/// A cookie's value from the request (the first of that name).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() <= 128)
}

/// A `Set-Cookie` value; `max_age_secs` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_open_find_and_end() {
        let s = Sessions::default();
        let acct = AccountId::generate();
        let id = s.create(acct.clone());
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}")).unwrap(),
        );
        let got = s.get(&h).unwrap();
        assert_eq!(got.account_id, acct);
        assert_eq!(got.csrf.len(), 64);
        s.end(&h);
        assert!(s.get(&h).is_none());
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
