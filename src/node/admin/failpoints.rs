//! `/failpoints` (built with the `failpoints` feature only): the storage crate's named
//! failpoints set and cleared while the node serves, so the fault tests break a running node
//! where they choose.
//!
//! - `POST /failpoints?name=N&actions=A`: configures `N` (the `fail` crate's syntax, e.g.
//!   `return(read)`, `10%return`, `off`);
//! - `DELETE /failpoints?name=N`: clears it;
//! - `GET /failpoints`: what is configured.

use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;

use super::{error, json};

/// Serves one `/failpoints` request.
pub(super) fn handle(method: &Method, session: &ServerSession) -> Response<Vec<u8>> {
    let query = session.req_header().uri.query().unwrap_or("");
    let param = |key: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    match *method {
        Method::GET => {
            let set: serde_json::Map<_, _> = fail::list()
                .into_iter()
                .map(|(name, actions)| (name, serde_json::Value::String(actions)))
                .collect();
            json(StatusCode::OK, &serde_json::Value::Object(set))
        }
        Method::POST => {
            let (Some(name), Some(actions)) = (param("name"), param("actions")) else {
                return error(StatusCode::BAD_REQUEST, "give name= and actions=");
            };
            match fail::cfg(name.clone(), &actions) {
                Ok(()) => {
                    tracing::warn!(failpoint = %name, %actions, "failpoint set");
                    json(StatusCode::OK, &serde_json::json!({ name: actions }))
                }
                Err(why) => error(StatusCode::BAD_REQUEST, &why),
            }
        }
        Method::DELETE => {
            let Some(name) = param("name") else {
                return error(StatusCode::BAD_REQUEST, "give name=");
            };
            fail::remove(&name);
            tracing::warn!(failpoint = %name, "failpoint cleared");
            json(StatusCode::OK, &serde_json::json!({ "cleared": name }))
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}
