//! The PostgreSQL pool every service uses.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// How long a request may wait for a free connection before it fails (and the caller answers 503).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects a pool of at most `max_connections` to `url`, failing with the URL's host in the message.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))
}

/// Whether an error means the database is unavailable (a 503 with `Retry-After`, not a 500): no connection
/// could be had, the connection broke, or the server is shutting down or starting (SQLSTATE classes 08 and
/// 57).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_drops_the_password_only() {
        assert_eq!(redact("postgres://u:secret@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
