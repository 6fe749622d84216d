//! Form-login sessions and CSRF tokens, shared by the account page (`/account`, secret key) and
//! the operator console (`/operator`, operator secret). Each page keeps its own rules (what a
//! login proves, its messages, its markup); this module holds what they do alike: the session
//! table, the cookies, the CSRF checks and the login/logout answers ([`Gate`]).
//!
//! A session is a random 256-bit id in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`,
//! `Secure` when `public_url` is https); the server keeps only its SHA-256, with who logged in,
//! the session's CSRF token and an expiry. Sessions live in memory: a restart logs everyone out
//! (nothing about them is persisted, so nothing needs migrating; logging in again is the cost).
//! Each page has its own cookie names and table, so an account session never opens the
//! console nor the reverse.
//!
//! CSRF: every form carries the session's token (synchronizer token), compared in constant time.
//! The login form, before any session exists, uses a double-submit token: a random value in a
//! short-lived `SameSite=Strict` cookie that the form must repeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use super::{esc, html, page as frame};
use crate::http::Params;

/// How long a session lasts after login (no sliding renewal).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a login form may wait before it is submitted.
pub const LOGIN_FORM_TTL_SECS: u64 = 3600;

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

/// A logged-in session of `T` (who logged in: an account, or `()` for the operator).
#[derive(Debug, Clone)]
pub struct Session<T> {
    /// Who logged in.
    pub who: T,
    /// The token every form of this session repeats.
    pub csrf: String,
    expires: Instant,
}

impl<T> Session<T> {
    /// The hidden form field carrying this session's CSRF token.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.csrf)
        )
    }
}

/// A session table, holding at most `max` sessions.
pub struct Sessions<T> {
    map: Mutex<HashMap<[u8; 32], Session<T>>>,
    max: usize,
}

impl<T: Clone> Sessions<T> {
    /// An empty table keeping at most `max` sessions; past that, expired ones are dropped and
    /// then the oldest.
    pub fn new(max: usize) -> Sessions<T> {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Opens a session; returns its cookie value.
    pub fn create(&self, who: T) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.max {
            m.retain(|_, s| s.expires > now);
            if m.len() >= self.max
                && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            digest(&id),
            Session {
                who,
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The live session named by the request's cookie `name`.
    fn get(&self, headers: &HeaderMap, name: &str) -> Option<Session<T>> {
        let id = cookie(headers, name)?;
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

    /// Ends the session named by the request's cookie `name`.
    fn end(&self, headers: &HeaderMap, name: &str) {
        if let Some(id) = cookie(headers, name) {
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

fn with_cookie(mut r: Response, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// `303 See Other` to `to`.
fn see_other(to: &'static str) -> Response {
    let mut r = html(StatusCode::SEE_OTHER, String::new());
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

/// The answer to a form whose CSRF token is missing or wrong.
fn forbidden() -> Response {
    html(
        StatusCode::FORBIDDEN,
        frame(
            "Refused",
            "<p class=\"error\" id=\"csrf-error\">Refused: the form's CSRF token is missing or wrong. Reload the page and try again.</p>",
            None,
        ),
    )
}

/// Why a form POST was not accepted.
pub enum Refused {
    /// No live session: back to the page (its login form).
    NoSession(&'static str),
    /// The CSRF token is missing or wrong.
    Csrf,
}

impl Refused {
    /// The answer: a redirect to the login form, or 403.
    pub fn response(self) -> Response {
        match self {
            Refused::NoSession(home) => see_other(home),
            Refused::Csrf => forbidden(),
        }
    }
}

/// One page's login: its cookies, its address, its session table. The page decides what a
/// login proves; the gate does the rest alike for every page.
pub struct Gate<T> {
    /// The page (`/account`, `/operator`): where logins, logouts and session-less POSTs go.
    pub home: &'static str,
    /// The session cookie.
    pub session_cookie: &'static str,
    /// The login form's double-submit cookie.
    pub login_cookie: &'static str,
    /// `Secure` on cookies: set when `public_url` is https.
    pub secure_cookies: bool,
    /// The page's sessions.
    pub sessions: Sessions<T>,
}

impl<T: Clone> Gate<T> {
    /// The live session of this request, if any.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session<T>> {
        self.sessions.get(headers, self.session_cookie)
    }

    /// The session of a form POST whose CSRF token matches, or the refusal.
    pub fn checked(&self, headers: &HeaderMap, p: &Params) -> Result<Session<T>, Refused> {
        let session = self.session(headers).ok_or(Refused::NoSession(self.home))?;
        let token = p.string("csrf", "csrf").ok().flatten().unwrap_or_default();
        if same(&token, &session.csrf) {
            Ok(session)
        } else {
            Err(Refused::Csrf)
        }
    }

    /// The login page: `page` renders it around the fresh double-submit token (to be sent as
    /// the form's `csrf` field), whose cookie is set on the answer.
    pub fn login_page(&self, page: impl FnOnce(&str) -> Response) -> Response {
        let token = random_token();
        with_cookie(
            page(&token),
            &set_cookie(
                self.login_cookie,
                &token,
                LOGIN_FORM_TTL_SECS,
                self.secure_cookies,
            ),
        )
    }

    /// Checks a login POST's double-submit token.
    pub fn check_login_form(&self, headers: &HeaderMap, p: &Params) -> Result<(), Refused> {
        let token = p.string("csrf", "csrf").ok().flatten().unwrap_or_default();
        let expected = cookie(headers, self.login_cookie).unwrap_or_default();
        if expected.is_empty() || !same(&token, &expected) {
            return Err(Refused::Csrf);
        }
        Ok(())
    }

    /// A successful login as `who`: a new session, its cookie, the login cookie cleared, and
    /// back to the page.
    pub fn logged_in(&self, who: T) -> Response {
        let id = self.sessions.create(who);
        let r = with_cookie(
            see_other(self.home),
            &set_cookie(
                self.session_cookie,
                &id,
                SESSION_TTL.as_secs(),
                self.secure_cookies,
            ),
        );
        with_cookie(
            r,
            &set_cookie(self.login_cookie, "", 0, self.secure_cookies),
        )
    }

    /// `POST …/logout` (CSRF-checked): ends the session and clears its cookie.
    pub fn logout(&self, headers: &HeaderMap, p: &Params) -> Response {
        if let Err(r) = self.checked(headers, p) {
            return r.response();
        }
        self.sessions.end(headers, self.session_cookie);
        with_cookie(
            see_other(self.home),
            &set_cookie(self.session_cookie, "", 0, self.secure_cookies),
        )
    }
}

/// The login form's message line (`id="login-error"`), empty without a message.
pub fn login_error(message: Option<&str>) -> String {
    message
        .map(|m| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(m)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use satchel_domain::AccountId;

    #[test]
    fn sessions_open_find_and_end() {
        let s = Sessions::new(10);
        let acct = AccountId::generate();
        let id = s.create(acct.clone());
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; sess={id}")).unwrap(),
        );
        assert!(s.get(&h, "other").is_none());
        let got = s.get(&h, "sess").unwrap();
        assert_eq!(got.who, acct);
        assert_eq!(got.csrf.len(), 64);
        s.end(&h, "sess");
        assert!(s.get(&h, "sess").is_none());
    }

    #[test]
    fn a_full_table_makes_room_for_a_new_session() {
        let s = Sessions::new(2);
        let first = s.create(1);
        let second = s.create(2);
        let third = s.create(3);
        let named = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                COOKIE,
                HeaderValue::from_str(&format!("sess={id}")).unwrap(),
            );
            s.get(&h, "sess").map(|x| x.who)
        };
        // The newest is always kept; one of the two before it made room.
        assert_eq!(named(&third), Some(3));
        let kept = [named(&first), named(&second)];
        assert_eq!(kept.iter().flatten().count(), 1, "{kept:?}");
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
