//! `${NAME}` in configuration values: replaced by the environment variable NAME.
//!
//! Expansion happens in the parsed document, value by value, never in the text: a secret
//! holding `: `, ` #` or a newline stays one value and cannot add or cut keys.

use serde_norway::Value;

/// Expands `${NAME}` in every string value of a parsed document. A value that is exactly one
/// `${NAME}` whose variable reads as a YAML number or boolean takes that type (so
/// `threads: ${THREADS}` works); everything else stays a string, as it was set.
pub(super) fn expand_values(v: &mut Value) -> Result<(), EnvError> {
    match v {
        Value::String(s) if s.contains("${") => {
            let whole = s.starts_with("${") && s.find('}') == Some(s.len() - 1);
            let expanded = expand_env(s)?;
            let typed = whole
                .then(|| serde_norway::from_str::<Value>(&expanded).ok())
                .flatten()
                .filter(|t| matches!(t, Value::Number(_) | Value::Bool(_)));
            *v = typed.unwrap_or(Value::String(expanded));
        }
        Value::Sequence(items) => {
            for i in items {
                expand_values(i)?;
            }
        }
        Value::Mapping(m) => {
            for (_, val) in m.iter_mut() {
                expand_values(val)?;
            }
        }
        Value::Tagged(t) => expand_values(&mut t.value)?,
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the environment variable NAME; an unset variable is an error.
fn expand_env(text: &str) -> Result<String, EnvError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expand_in_place_and_cannot_inject_keys() {
        std::env::set_var("STRATA_TEST_SECRET", "a: b #c\nlisten: 0.0.0.0:1");
        std::env::set_var("STRATA_TEST_THREADS", "3");
        let mut v: Value = serde_norway::from_str(
            "s: ${STRATA_TEST_SECRET}\nt: ${STRATA_TEST_THREADS}\nu: x${STRATA_TEST_THREADS}\n",
        )
        .unwrap();
        expand_values(&mut v).unwrap();
        assert_eq!(v["s"], Value::String("a: b #c\nlisten: 0.0.0.0:1".into()));
        assert_eq!(v["t"], Value::Number(3.into()));
        assert_eq!(v["u"], Value::String("x3".into()));
        assert!(v.get("listen").is_none());
    }
}
