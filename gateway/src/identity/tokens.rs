//! etcd auth tokens: which user a token belongs to. JWT tokens say so in their payload (read
//! without verifying: etcd verifies); simple tokens are learned from Authenticate responses
//! passing through keygate, and the oldest are forgotten past a bound.

use base64::Engine;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub struct TokenBook {
    inner: Mutex<Book>,
    cap: usize,
}

#[derive(Default)]
struct Book {
    users: HashMap<String, String>,
    order: VecDeque<String>,
}

impl TokenBook {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Book::default()),
            cap,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        match self.inner.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Remembers that etcd issued `token` to `user`.
    pub fn learn(&self, token: &str, user: &str) {
        if token.is_empty() || self.cap == 0 || jwt_user(token).is_some() {
            return;
        }
        let mut book = self.book();
        if book
            .users
            .insert(token.to_string(), user.to_string())
            .is_none()
        {
            book.order.push_back(token.to_string());
        }
        while book.users.len() > self.cap {
            match book.order.pop_front() {
                Some(old) => {
                    book.users.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Forgets a token etcd no longer accepts.
    pub fn forget(&self, token: &str) {
        let mut book = self.book();
        if book.users.remove(token).is_some() {
            book.order.retain(|t| t != token);
        }
    }

    /// The user a token belongs to, if keygate knows.
    pub fn user(&self, token: &str) -> Option<String> {
        jwt_user(token).or_else(|| self.book().users.get(token).cloned())
    }
}

/// The `username` claim of a JWT, unverified.
pub fn jwt_user(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("username")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_payload_names_the_user() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":1,"revision":2,"username":"alice"}"#);
        assert_eq!(
            jwt_user(&format!("h.{payload}.sig")).as_deref(),
            Some("alice")
        );
        assert_eq!(jwt_user("abcdef.12"), None);
        assert_eq!(jwt_user("a.!!.c"), None);
    }

    #[test]
    fn learned_tokens_are_bounded() {
        let book = TokenBook::new(2);
        book.learn("t1.1", "a");
        book.learn("t2.2", "b");
        book.learn("t3.3", "c");
        assert_eq!(book.user("t1.1"), None);
        assert_eq!(book.user("t3.3").as_deref(), Some("c"));
        book.forget("t3.3");
        assert_eq!(book.user("t3.3"), None);
    }
}
