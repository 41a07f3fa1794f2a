//! Why connecting to PostgreSQL failed, and whether waiting can help.
//!
//! A node may start before its database server (a restart of both, a
//! container started in any order): that is retried. A database, user or
//! permission that is missing will not appear by retrying: that is said
//! once, with the fix, and the node stops.

use tokio_postgres::error::SqlState;

/// Connecting to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or did not answer: it may come
    /// back, so the caller retries.
    #[error("PostgreSQL: {0}")]
    Unreachable(String),
    /// The server answered no, and will until the operator changes
    /// something: the URL, the database, a role or a grant.
    #[error("{message}")]
    Refused { message: String, help: String },
}

impl ConnectError {
    /// What to do about a refusal; `None` when retrying is the fix.
    pub fn help(&self) -> Option<&str> {
        match self {
            ConnectError::Unreachable(_) => None,
            ConnectError::Refused { help, .. } => Some(help),
        }
    }

    pub(crate) fn refused(message: impl Into<String>, help: impl Into<String>) -> ConnectError {
        ConnectError::Refused {
            message: message.into(),
            help: help.into(),
        }
    }

    /// Sorts an error of `config`'s server into one that waiting may
    /// mend and one that it will not.
    pub(crate) fn classify(
        e: &tokio_postgres::Error,
        config: &tokio_postgres::Config,
    ) -> ConnectError {
        let Some(db) = e.as_db_error() else {
            return tls_refusal(chain(e));
        };
        let user = config.get_user().unwrap_or("(default)");
        let database = config.get_dbname().unwrap_or(user);
        let code = db.code();
        if *code == SqlState::INVALID_CATALOG_NAME {
            ConnectError::refused(
                format!("PostgreSQL database `{database}` does not exist"),
                format!(
                    "create it (`createdb {database}`, or `CREATE DATABASE \"{database}\";` in \
                     psql as a superuser) or name an existing one in the URL"
                ),
            )
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            ConnectError::refused(
                format!("PostgreSQL refused user `{user}`: {}", db.message()),
                "check the user and password in the store URL, and the server's pg_hba.conf",
            )
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ConnectError::refused(
                format!(
                    "PostgreSQL user `{user}` may not create Verge's tables in `{database}`: {}",
                    db.message()
                ),
                format!(
                    "grant it the right (`GRANT CREATE ON DATABASE \"{database}\" TO \"{user}\";`) \
                     or use a user that owns the database"
                ),
            )
        } else if code.code().starts_with("08") || code.code().starts_with("57") {
            // Connection exceptions and operator intervention (a server
            // starting up or shutting down): these pass.
            ConnectError::Unreachable(chain(e))
        } else {
            ConnectError::refused(
                format!("PostgreSQL: {} ({})", db.message(), code.code()),
                "fix the database or the store URL, then start the node again",
            )
        }
    }
}

/// A TLS failure that waiting will not mend, with its fix; any other
/// failure to reach the server is retried.
fn tls_refusal(text: String) -> ConnectError {
    if text.contains("server does not support TLS") {
        ConnectError::refused(
            "the PostgreSQL server does not offer TLS, and the store URL's sslmode requires it",
            "turn `ssl` on in the server's postgresql.conf, or use sslmode=prefer",
        )
    } else if text.contains("invalid peer certificate") {
        ConnectError::refused(
            format!("the PostgreSQL server's certificate was not accepted: {text}"),
            "give sslrootcert=PATH (a PEM file of the CA that signed it), connect by the name \
             it was issued for, or lower sslmode to verify-ca or require",
        )
    } else {
        ConnectError::Unreachable(text)
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
