//! `${NAME}` in the configuration text: replaced by the environment variable NAME.

/// Replaces `${NAME}` with the environment variable NAME; an unset variable is an error.
pub(super) fn expand_env(text: &str) -> Result<String, EnvError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(EnvError::Unterminated)?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| EnvError::Unset(name.to_string()))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why `${…}` could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `${` without its `}`.
    #[error("unterminated ${{ in configuration")]
    Unterminated,
    /// The variable is not set.
    #[error("environment variable {0} (used as ${{{0}}}) is not set")]
    Unset(String),
}
